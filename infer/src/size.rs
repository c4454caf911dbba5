//! A `WIDTHxHEIGHT` pixel size (`1280x720`): parsed from and written as that string on
//! the command line, in configuration files and in JSON.

use serde::{Deserialize, Serialize};

/// A positive `WIDTHxHEIGHT` pixel size, serialised as that string.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Size {
    /// Width in pixels.
    pub width: u32,
    /// Height in pixels.
    pub height: u32,
}

impl Size {
    /// `width x height`.
    pub const fn new(width: u32, height: u32) -> Size {
        Size { width, height }
    }

    /// As a `(width, height)` pair.
    pub fn pair(self) -> (u32, u32) {
        (self.width, self.height)
    }
}

impl From<(u32, u32)> for Size {
    fn from((width, height): (u32, u32)) -> Size {
        Size { width, height }
    }
}

impl std::str::FromStr for Size {
    type Err = String;

    /// Parses `WxH` (or `WXH`, spaces around the numbers allowed); both must be positive.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || format!("size `{s}` is not WIDTHxHEIGHT (for example 1280x720)");
        let (w, h) = s.trim().split_once(['x', 'X']).ok_or_else(bad)?;
        let width: u32 = w.trim().parse().map_err(|_| bad())?;
        let height: u32 = h.trim().parse().map_err(|_| bad())?;
        if width == 0 || height == 0 {
            return Err(format!("size `{s}` must be positive"));
        }
        Ok(Size { width, height })
    }
}

impl std::fmt::Display for Size {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}", self.width, self.height)
    }
}

impl TryFrom<String> for Size {
    type Error = String;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl From<Size> for String {
    fn from(s: Size) -> String {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_prints_and_serialises_as_wxh() {
        let s: Size = " 1280X720 ".parse().unwrap();
        assert_eq!(s.pair(), (1280, 720));
        assert_eq!(s.to_string(), "1280x720");
        assert_eq!(serde_json::to_string(&s).unwrap(), "\"1280x720\"");
        assert_eq!(serde_json::from_str::<Size>("\"2x3\"").unwrap(), Size::new(2, 3));
        for bad in ["1280", "0x720", "ax2", "12x", "-1x2"] {
            assert!(bad.parse::<Size>().is_err(), "{bad}");
        }
        assert!(serde_json::from_str::<Size>("\"0x1\"").is_err());
    }
}
