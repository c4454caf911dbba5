//! Paired, reproducible randomness: every random choice of Algorithm 1 draws from its own
//! generator, derived from (seed, rank, purpose, iteration) and from nothing else.
//!
//! Two runs with one seed therefore see the same ClassMix classes, augmentations, CutMix
//! boxes, NS(R) subsets and bank samples at every iteration whatever the other
//! components consume: a `baseline` run and an `rccr` run of one seed differ only by the
//! contrastive term (the pairing test checks `--mode rccr --mu-max 0` against
//! `--mode baseline` bit for bit). Data sampling follows the same rule in the loaders
//! (`crate::data::augment::rng_for`, keyed by seed and global sample index). A resumed
//! run needs no generator state: iteration t's streams are rebuilt from t.
//!
//! The network's own randomness (MiT's stochastic depth and decoder dropout) draws, in
//! each student pass, from a per-thread generator seeded by that pass's stream
//! ([`Streams::pass_seed`], `rccr_models::stochastic`): the `rccr` run's extra CutMix pass
//! cannot shift the `baseline` passes' draws, a resumed run draws what the whole run
//! drew, and nothing touches libtorch's global generator during training.

use crate::data::augment::mix;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// What a stream is for; each purpose has its own generator per iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Purpose {
    /// The ClassMix classes (Algorithm 1 line 3, L_cons).
    ClassMix = 1,
    /// Colour jitter and blur of the ClassMix images.
    ClassMixAug = 2,
    /// The CutMix box (Eq. 3).
    CutMixBox = 3,
    /// Colour jitter and blur of the CutMix images.
    CutMixAug = 4,
    /// NS(R): the random half of the negatives (Sec. 3.2.4).
    NsRandom = 5,
    /// The locations pushed into the memory bank (Sec. 3.2.5).
    Bank = 6,
    /// MIC's patch mask.
    MicMask = 7,
    /// Colour jitter and blur of MIC's masked image.
    MicAug = 8,
    /// The network's draws in the student's pass on the source batch.
    SourcePass = 9,
    /// ... on the ClassMix images (L_cons).
    ClassMixPass = 10,
    /// ... on the CutMix images (L_cont's E_cut).
    CutMixPass = 11,
    /// ... on MIC's masked image.
    MicPass = 12,
}

/// Salt that separates these streams from the data loaders' (which mix the bare seed).
const SALT: u64 = 0x5243_4352_4d49_5845;

/// The source of every per-iteration generator of a run.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Streams {
    /// The run's seed.
    pub seed: u64,
    /// The process's rank in data-parallel training (0 alone).
    pub rank: u64,
}

impl Streams {
    /// The generator of `purpose` at 0-based `iteration`.
    pub fn rng(&self, purpose: Purpose, iteration: u64) -> ChaCha8Rng {
        let base = mix(self.seed ^ SALT, self.rank, purpose as u64);
        ChaCha8Rng::seed_from_u64(mix(base, purpose as u64, iteration))
    }

    /// The seed of the network's own draws (drop path, dropout) in a student pass:
    /// `rccr_models::stochastic::with_seed` takes it.
    pub fn pass_seed(&self, pass: Purpose, iteration: u64) -> u64 {
        use rand::RngCore;
        self.rng(pass, iteration).next_u64()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::Rng;

    #[test]
    fn streams_depend_on_every_key_and_nothing_else() {
        let s = Streams { seed: 7, rank: 0 };
        let draw = |s: Streams, p, t| s.rng(p, t).gen::<u64>();
        assert_eq!(
            draw(s, Purpose::CutMixBox, 3),
            draw(s, Purpose::CutMixBox, 3)
        );
        assert_ne!(
            draw(s, Purpose::CutMixBox, 3),
            draw(s, Purpose::CutMixBox, 4)
        );
        assert_ne!(
            draw(s, Purpose::CutMixBox, 3),
            draw(s, Purpose::ClassMix, 3)
        );
        let other_seed = Streams { seed: 8, rank: 0 };
        assert_ne!(
            draw(s, Purpose::Bank, 0),
            draw(other_seed, Purpose::Bank, 0)
        );
        let other_rank = Streams { seed: 7, rank: 1 };
        assert_ne!(
            draw(s, Purpose::Bank, 0),
            draw(other_rank, Purpose::Bank, 0)
        );
    }
}
