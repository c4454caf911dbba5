//! The network's training-time randomness: MiT's stochastic depth and the decoders'
//! channel dropout. Their keep-masks draw from a per-thread generator while one is set by
//! [`with_seed`] (the trainer sets one per student pass, keyed by seed, rank, pass and
//! iteration: docs/method.md, "Randomness"), so the draws depend on that key alone, not on
//! what else ran before or on another thread; without one they come from libtorch's global
//! generator.

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use tch::{Device, Tensor};

/// Uniforms drawn and uploaded per call to the device at a time: a pass's masks (MiT-B5:
/// 2 x 52 blocks x batch, plus the decoder's channels) usually fit in one upload, so a
/// GPU pass does not stall on a host copy per block.
const CHUNK: i64 = 4096;

/// A pass's generator and the uniforms it has uploaded but not yet handed out.
struct Stream {
    rng: ChaCha8Rng,
    buffer: Option<Tensor>,
    used: i64,
}

thread_local! {
    static STREAM: RefCell<Option<Stream>> = const { RefCell::new(None) };
}

/// Runs `f` with this thread's masks drawn from a generator seeded with `seed`.
pub fn with_seed<T>(seed: u64, f: impl FnOnce() -> T) -> T {
    let stream = Stream {
        rng: ChaCha8Rng::seed_from_u64(seed),
        buffer: None,
        used: 0,
    };
    let previous = STREAM.with(|s| s.borrow_mut().replace(stream));
    let out = f();
    STREAM.with(|s| *s.borrow_mut() = previous);
    out
}

/// The next `n` uniforms in [0, 1) of this thread's stream on `device` (None outside
/// [`with_seed`]), uploaded [`CHUNK`] at a time.
fn uniforms(n: i64, device: Device) -> Option<Tensor> {
    STREAM.with(|s| {
        let mut s = s.borrow_mut();
        let st = s.as_mut()?;
        let left = |b: &Tensor| b.device() == device && b.size()[0] - st.used >= n;
        if !st.buffer.as_ref().is_some_and(left) {
            let v: Vec<f32> = (0..n.max(CHUNK)).map(|_| st.rng.gen::<f32>()).collect();
            st.buffer = Some(Tensor::from_slice(&v).to_device(device));
            st.used = 0;
        }
        let u = st.buffer.as_ref()?.narrow(0, st.used, n);
        st.used += n;
        Some(u)
    })
}

/// A mask of `shape` like `xs` (kind, device): each entry 1 with probability `keep`, else 0.
pub fn keep_mask(shape: &[i64], keep: f64, xs: &Tensor) -> Tensor {
    match uniforms(shape.iter().product(), xs.device()) {
        Some(u) => u.lt(keep).to_kind(xs.kind()).view(shape),
        None => Tensor::empty(shape, (xs.kind(), xs.device())).bernoulli_float_(keep),
    }
}

/// Channel dropout (training only): each sample's channel of `xs` `[N, C, ...]` is zeroed
/// with probability `p`, the kept ones scaled by 1 / (1 - p).
pub fn channel_dropout(xs: &Tensor, p: f64, train: bool) -> Tensor {
    if !train || p <= 0.0 {
        return xs.shallow_clone();
    }
    let mut shape = vec![1i64; xs.dim()];
    shape[..2].copy_from_slice(&xs.size()[..2]);
    xs * (keep_mask(&shape, 1.0 - p, xs) / (1.0 - p))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tch::{Device, Kind};

    #[test]
    fn a_seed_fixes_the_masks_whatever_the_global_generator_does() {
        let x = Tensor::ones([64, 8, 2, 2], (Kind::Float, Device::Cpu));
        let draw = |global: i64| {
            tch::manual_seed(global);
            with_seed(5, || channel_dropout(&x, 0.5, true))
        };
        assert!(
            draw(1).equal(&draw(2)),
            "a set seed ignores the global generator"
        );
        assert!(!with_seed(6, || channel_dropout(&x, 0.5, true)).equal(&draw(1)));
        // Whole channels: zero or 1 / (1 - p) = 2, and about half of the 512 kept.
        let y = draw(1);
        let per_channel = y.amax([2, 3].as_slice(), false);
        assert!(
            y.eq_tensor(&per_channel.view([64, 8, 1, 1]))
                .all()
                .int64_value(&[])
                == 1
        );
        let kept = y.gt(0.0).sum(Kind::Int64).int64_value(&[]) / 4;
        assert!((200..312).contains(&kept), "{kept} of 512 channels kept");
        assert!(channel_dropout(&x, 0.5, false).equal(&x));
        // Past one upload the stream goes on: 3 masks of 2048 draw 6144 > CHUNK values,
        // the same ones for the same seed, and not a repeat of the first upload's.
        let big = Tensor::ones([2048, 1], (Kind::Float, Device::Cpu));
        let three = |seed| with_seed(seed, || [0; 3].map(|_| channel_dropout(&big, 0.5, true)));
        let (a, b) = (three(7), three(7));
        assert!(a.iter().zip(&b).all(|(x, y)| x.equal(y)));
        assert!(!a[2].equal(&a[0]) && !a[2].equal(&a[1]));
    }
}
