//! A local seeded generator over rccr-infer's SplitMix64, for test data that must not
//! share a global generator between test threads.

use rccr_infer::seed::{SplitMix, GOLDEN_GAMMA};

/// SplitMix64 seeded with `seed ^` [`GOLDEN_GAMMA`] (so seed 0 does not start at state 0).
#[derive(Debug, Clone)]
pub struct Rng(SplitMix);

impl Rng {
    /// The generator of `seed`.
    pub fn new(seed: u64) -> Rng {
        Rng(SplitMix(seed ^ GOLDEN_GAMMA))
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// Uniform in [lo, hi), from the top 53 bits.
    pub fn uniform(&mut self, lo: f64, hi: f64) -> f32 {
        let u = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        (lo + (hi - lo) * u) as f32
    }

    /// `len` values uniform in [lo, hi).
    pub fn uniforms(&mut self, len: usize, lo: f64, hi: f64) -> Vec<f32> {
        (0..len).map(|_| self.uniform(lo, hi)).collect()
    }

    /// `len` incompressible bytes (the low byte of each draw).
    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_splitmix64_of_the_mixed_seed() {
        let mut a = Rng::new(7);
        let mut b = SplitMix(7 ^ GOLDEN_GAMMA);
        assert_eq!(a.next_u64(), b.next_u64());
        assert_eq!(
            a.bytes(3),
            (0..3).map(|_| b.next_u64() as u8).collect::<Vec<_>>()
        );
    }

    #[test]
    fn uniforms_stay_in_range_and_repeat_per_seed() {
        let v = Rng::new(1).uniforms(1000, -2.0, 3.0);
        assert!(v.iter().all(|x| (-2.0..3.0).contains(x)));
        assert_eq!(v, Rng::new(1).uniforms(1000, -2.0, 3.0));
        assert_ne!(v, Rng::new(2).uniforms(1000, -2.0, 3.0));
    }
}
