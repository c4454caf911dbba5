//! The Cityscapes label taxonomy (labelId <-> trainId <-> name <-> colour), as in the
//! official `cityscapesscripts/helpers/labels.py`, the SYNTHIA id -> trainId map used by
//! the DACS / RCCR code, and the 19 / 16 / 13-class evaluation protocols.

/// The ignore label of train-id maps.
pub const IGNORE: u8 = 255;

/// Number of Cityscapes training classes.
pub const NUM_CLASSES: usize = 19;

/// One Cityscapes training class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Class {
    /// trainId (0..19).
    pub train_id: u8,
    /// labelId of the official format.
    pub label_id: u8,
    /// Official name.
    pub name: &'static str,
    /// Official colour (RGB).
    pub color: [u8; 3],
}

/// The 19 training classes in trainId order (labels.py).
pub const CLASSES: [Class; NUM_CLASSES] = [
    Class {
        train_id: 0,
        label_id: 7,
        name: "road",
        color: [128, 64, 128],
    },
    Class {
        train_id: 1,
        label_id: 8,
        name: "sidewalk",
        color: [244, 35, 232],
    },
    Class {
        train_id: 2,
        label_id: 11,
        name: "building",
        color: [70, 70, 70],
    },
    Class {
        train_id: 3,
        label_id: 12,
        name: "wall",
        color: [102, 102, 156],
    },
    Class {
        train_id: 4,
        label_id: 13,
        name: "fence",
        color: [190, 153, 153],
    },
    Class {
        train_id: 5,
        label_id: 17,
        name: "pole",
        color: [153, 153, 153],
    },
    Class {
        train_id: 6,
        label_id: 19,
        name: "traffic light",
        color: [250, 170, 30],
    },
    Class {
        train_id: 7,
        label_id: 20,
        name: "traffic sign",
        color: [220, 220, 0],
    },
    Class {
        train_id: 8,
        label_id: 21,
        name: "vegetation",
        color: [107, 142, 35],
    },
    Class {
        train_id: 9,
        label_id: 22,
        name: "terrain",
        color: [152, 251, 152],
    },
    Class {
        train_id: 10,
        label_id: 23,
        name: "sky",
        color: [70, 130, 180],
    },
    Class {
        train_id: 11,
        label_id: 24,
        name: "person",
        color: [220, 20, 60],
    },
    Class {
        train_id: 12,
        label_id: 25,
        name: "rider",
        color: [255, 0, 0],
    },
    Class {
        train_id: 13,
        label_id: 26,
        name: "car",
        color: [0, 0, 142],
    },
    Class {
        train_id: 14,
        label_id: 27,
        name: "truck",
        color: [0, 0, 70],
    },
    Class {
        train_id: 15,
        label_id: 28,
        name: "bus",
        color: [0, 60, 100],
    },
    Class {
        train_id: 16,
        label_id: 31,
        name: "train",
        color: [0, 80, 100],
    },
    Class {
        train_id: 17,
        label_id: 32,
        name: "motorcycle",
        color: [0, 0, 230],
    },
    Class {
        train_id: 18,
        label_id: 33,
        name: "bicycle",
        color: [119, 11, 32],
    },
];

/// Names of the 19 classes in trainId order.
pub fn class_names() -> Vec<&'static str> {
    CLASSES.iter().map(|c| c.name).collect()
}

/// The 19 colours in trainId order.
pub fn palette() -> Vec<[u8; 3]> {
    CLASSES.iter().map(|c| c.color).collect()
}

const fn build_label_to_train() -> [u8; 256] {
    let mut lut = [IGNORE; 256];
    let mut i = 0;
    while i < NUM_CLASSES {
        lut[CLASSES[i].label_id as usize] = CLASSES[i].train_id;
        i += 1;
    }
    lut
}

/// labelId -> trainId lookup table; every id that is not a training class maps to 255.
pub const LABEL_TO_TRAIN: [u8; 256] = build_label_to_train();

/// Cityscapes labelId -> trainId (255 for void and unknown ids).
pub fn label_to_train(label_id: u8) -> u8 {
    LABEL_TO_TRAIN[label_id as usize]
}

/// trainId -> labelId (the official result format); `None` for 255 and ids >= 19.
pub fn train_to_label(train_id: u8) -> Option<u8> {
    CLASSES.get(train_id as usize).map(|c| c.label_id)
}

/// Largest labelId of the official table (license plate = -1 excluded): 0..=33.
pub const MAX_LABEL_ID: u8 = 33;

/// SYNTHIA (RAND-CITYSCAPES) class id -> trainId pairs, as in the DACS / RCCR loaders.
/// Terrain (9), truck (14) and train (16) have no SYNTHIA counterpart.
pub const SYNTHIA_TO_TRAIN: [(u16, u8); 16] = [
    (3, 0),
    (4, 1),
    (2, 2),
    (21, 3),
    (5, 4),
    (7, 5),
    (15, 6),
    (9, 7),
    (6, 8),
    (1, 10),
    (10, 11),
    (17, 12),
    (8, 13),
    (19, 15),
    (12, 17),
    (11, 18),
];

/// SYNTHIA class id -> trainId (255 for every id without a counterpart).
pub fn synthia_to_train(id: u16) -> u8 {
    SYNTHIA_TO_TRAIN
        .iter()
        .find(|(s, _)| *s == id)
        .map_or(IGNORE, |&(_, t)| t)
}

/// An evaluation protocol: which trainIds are averaged into the mIoU.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum Protocol {
    /// All 19 Cityscapes classes (GTA5 -> Cityscapes).
    Classes19,
    /// SYNTHIA's 16: without terrain, truck, train.
    Classes16,
    /// SYNTHIA's 13: also without wall, fence, pole.
    Classes13,
}

impl Protocol {
    /// From a class count (19, 16 or 13).
    pub fn from_count(n: usize) -> Option<Protocol> {
        match n {
            19 => Some(Protocol::Classes19),
            16 => Some(Protocol::Classes16),
            13 => Some(Protocol::Classes13),
            _ => None,
        }
    }

    /// The trainIds the protocol averages over.
    pub fn train_ids(self) -> Vec<u8> {
        let excluded: &[u8] = match self {
            Protocol::Classes19 => &[],
            Protocol::Classes16 => &[9, 14, 16],
            Protocol::Classes13 => &[3, 4, 5, 9, 14, 16],
        };
        (0..NUM_CLASSES as u8)
            .filter(|t| !excluded.contains(t))
            .collect()
    }

    /// Number of classes averaged.
    pub fn count(self) -> usize {
        self.train_ids().len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn label_train_round_trip() {
        for c in CLASSES {
            assert_eq!(label_to_train(c.label_id), c.train_id);
            assert_eq!(train_to_label(c.train_id), Some(c.label_id));
        }
        // Void ids of labels.py (unlabeled, ego vehicle, ..., license plate as 255 or -1).
        for void in [
            0u8, 1, 2, 3, 4, 5, 6, 9, 10, 14, 15, 16, 18, 29, 30, 34, 200, 255,
        ] {
            assert_eq!(label_to_train(void), IGNORE, "labelId {void}");
        }
        assert_eq!(train_to_label(19), None);
        assert_eq!(train_to_label(IGNORE), None);
        let mapped = (0..=255u8).filter(|&l| label_to_train(l) != IGNORE).count();
        assert_eq!(mapped, 19);
    }

    #[test]
    fn synthia_map_matches_the_notes() {
        // A deliberate oracle: the table of docs/design.md#data-and-label-maps (3->0, 4->1,
        // 2->2, 21->3, 5->4, 7->5, 15->6, 9->7, 6->8, 1->10, 10->11, 17->12, 8->13, 19->15,
        // 12->17, 11->18) typed in again independently of SYNTHIA_TO_TRAIN, so that a slip
        // in either copy fails this test.
        let expected = [
            (3, 0),
            (4, 1),
            (2, 2),
            (21, 3),
            (5, 4),
            (7, 5),
            (15, 6),
            (9, 7),
            (6, 8),
            (1, 10),
            (10, 11),
            (17, 12),
            (8, 13),
            (19, 15),
            (12, 17),
            (11, 18),
        ];
        for (s, t) in expected {
            assert_eq!(synthia_to_train(s), t);
        }
        for unknown in [0u16, 13, 14, 16, 18, 20, 22, 1000] {
            assert_eq!(synthia_to_train(unknown), IGNORE);
        }
        let targets: Vec<u8> = SYNTHIA_TO_TRAIN.iter().map(|p| p.1).collect();
        for absent in [9u8, 14, 16] {
            assert!(!targets.contains(&absent));
        }
    }

    #[test]
    fn protocols() {
        assert_eq!(Protocol::Classes19.count(), 19);
        assert_eq!(Protocol::Classes16.count(), 16);
        assert_eq!(Protocol::Classes13.count(), 13);
        assert!(!Protocol::Classes13.train_ids().contains(&5));
        assert!(Protocol::Classes16.train_ids().contains(&5));
    }
}
