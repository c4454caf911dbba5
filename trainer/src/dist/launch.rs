//! The launch contract of torchrun (and of SLURM wrappers that export the same names):
//! `RANK`, `WORLD_SIZE`, `LOCAL_RANK`, `MASTER_ADDR`, `MASTER_PORT`. Without
//! `WORLD_SIZE` the run is a single process and nothing changes. Under torchrun the
//! agent already hosts the TCPStore at MASTER_ADDR:MASTER_PORT
//! (`TORCHELASTIC_USE_AGENT_STORE=True`), so every rank joins it as a client; launched
//! by hand, rank 0 hosts it.

/// This process's place in a data-parallel run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Launch {
    /// Global rank.
    pub rank: usize,
    /// Number of processes.
    pub world_size: usize,
    /// Rank on this node (picks the CUDA device).
    pub local_rank: usize,
    /// The TCPStore's host.
    pub master_addr: String,
    /// The TCPStore's port.
    pub master_port: u16,
    /// Whether a launcher's agent hosts the store (torchrun).
    pub agent_store: bool,
}

impl Launch {
    /// Reads the environment; `Ok(None)` without `WORLD_SIZE`.
    pub fn from_env() -> crate::Result<Option<Launch>> {
        Launch::from_lookup(|k| std::env::var(k).ok()).map_err(crate::Error::DistSetup)
    }

    /// As [`Launch::from_env`] over any variable lookup (tests).
    pub(crate) fn from_lookup(
        get: impl Fn(&str) -> Option<String>,
    ) -> Result<Option<Launch>, String> {
        let Some(world) = get("WORLD_SIZE") else {
            return Ok(None);
        };
        let num = |k: &str, v: &str| -> Result<usize, String> {
            v.trim()
                .parse()
                .map_err(|_| format!("{k}={v} is not a number (set by torchrun or your launcher)"))
        };
        let world_size = num("WORLD_SIZE", &world)?;
        let rank = num("RANK", &get("RANK").ok_or("WORLD_SIZE is set but RANK is not: launch with torchrun (scripts/torchrun) or set RANK")?)?;
        if world_size == 0 || rank >= world_size {
            return Err(format!("RANK={rank} is not below WORLD_SIZE={world_size}"));
        }
        let local_rank = match get("LOCAL_RANK") {
            Some(v) => num("LOCAL_RANK", &v)?,
            None => rank,
        };
        let port = get("MASTER_PORT").ok_or("WORLD_SIZE is set but MASTER_PORT is not: set MASTER_ADDR and MASTER_PORT (torchrun does)")?;
        let master_port = port
            .trim()
            .parse()
            .map_err(|_| format!("MASTER_PORT={port} is not a port number"))?;
        Ok(Some(Launch {
            rank,
            world_size,
            local_rank,
            master_addr: get("MASTER_ADDR").unwrap_or_else(|| "127.0.0.1".into()),
            master_port,
            agent_store: get("TORCHELASTIC_USE_AGENT_STORE").is_some_and(|v| v == "True"),
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn reads_the_torchrun_contract() {
        assert_eq!(Launch::from_lookup(env(&[])).unwrap(), None);
        let l = Launch::from_lookup(env(&[
            ("WORLD_SIZE", "4"),
            ("RANK", "3"),
            ("LOCAL_RANK", "1"),
            ("MASTER_ADDR", "node7"),
            ("MASTER_PORT", "29500"),
            ("TORCHELASTIC_USE_AGENT_STORE", "True"),
        ]))
        .unwrap()
        .unwrap();
        assert_eq!(
            (l.rank, l.world_size, l.local_rank, l.master_port),
            (3, 4, 1, 29500)
        );
        assert!(l.agent_store && l.master_addr == "node7");
        let e = Launch::from_lookup(env(&[
            ("WORLD_SIZE", "2"),
            ("RANK", "2"),
            ("MASTER_PORT", "1"),
        ]));
        assert!(e.unwrap_err().contains("not below"));
        let e = Launch::from_lookup(env(&[("WORLD_SIZE", "2"), ("RANK", "0")]));
        assert!(e.unwrap_err().contains("MASTER_PORT"));
    }
}
