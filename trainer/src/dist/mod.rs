//! Data-parallel training on libtorch's c10d (docs/distributed.md).
//!
//! Semantics, as PyTorch's DistributedDataParallel where it has a rule:
//! - every rank draws its own source and target batches and random choices from
//!   (seed, rank, iteration) (`crate::streams`, the loaders' seeds);
//! - after all backward passes, gradients are averaged over the ranks in flat buckets of
//!   about 25 MB (`Ddp::average_gradients`); a parameter that no rank's terms reached
//!   keeps no gradient, so the optimiser treats it exactly as a single process would;
//! - parameters, buffers and momentum are broadcast from rank 0 at the start (fresh or
//!   resumed); after every step the batch-norm running statistics of student and teacher
//!   are broadcast from rank 0 (DDP's `broadcast_buffers`), so the EMA teacher stays
//!   bit-identical on every rank;
//! - `--sync-bn`: the student's BN layers use the statistics of every rank's images
//!   ([`sync_bn`]);
//! - the memory bank all-gathers every rank's sampled negatives, so it holds what one
//!   process with the whole batch would store; L_cont's current negatives stay per rank
//!   (each rank's 2Bhw cells; docs/design.md#optimisation);
//! - rank 0 alone validates, logs and writes checkpoints; the others wait at a barrier.
//!   A rank that dies makes the others fail within `--dist-timeout`.

pub mod group;
pub mod launch;
pub mod sync_bn;

pub use group::{DistError, GroupConfig, ProcessGroup};
pub use launch::Launch;

use std::cell::RefCell;
use std::rc::Rc;
use std::time::Instant;
use tch::{nn, Kind, Tensor};

/// Gradient bucket size (PyTorch DDP's default `bucket_cap_mb`).
pub(crate) const BUCKET_BYTES: i64 = 25 * 1024 * 1024;

/// The data-parallel state of a trainer.
#[derive(Debug)]
pub struct Ddp {
    /// The process group.
    pub pg: Rc<ProcessGroup>,
    /// Synchronised batch norm in the student's forwards.
    pub sync_bn: bool,
    /// Seconds spent averaging gradients since the last [`Ddp::take_reduce_seconds`].
    reduce_seconds: f64,
    /// A c10d failure inside a synchronised BN forward.
    pub bn_failure: Rc<RefCell<Option<DistError>>>,
}

/// Joins the run `l` describes: the backend (`auto`: NCCL on CUDA, Gloo on the CPU), the
/// device (`cuda:LOCAL_RANK` when `device` is CUDA) and the process group.
pub fn join(
    l: &Launch,
    backend: crate::config::DistBackend,
    timeout_s: u32,
    device: tch::Device,
) -> Result<(ProcessGroup, tch::Device, &'static str), DistError> {
    use crate::config::DistBackend;
    let device = if device.is_cuda() {
        tch::Device::Cuda(l.local_rank)
    } else {
        device
    };
    let name = match (backend, device.is_cuda()) {
        (DistBackend::Auto, true) | (DistBackend::Nccl, _) => "nccl",
        (DistBackend::Auto, false) | (DistBackend::Gloo, _) => "gloo",
    };
    let pg = ProcessGroup::init(&GroupConfig {
        backend: name.into(),
        host: l.master_addr.clone(),
        port: l.master_port,
        rank: l.rank,
        size: l.world_size,
        timeout_s,
        host_store: l.rank == 0 && !l.agent_store,
    })?;
    Ok((pg, device, name))
}

impl Ddp {
    /// Wraps a process group.
    pub fn new(pg: ProcessGroup, sync_bn: bool) -> Ddp {
        Ddp::shared(Rc::new(pg), sync_bn)
    }

    /// Wraps a process group shared with other users (the benchmark's modes).
    pub fn shared(pg: Rc<ProcessGroup>, sync_bn: bool) -> Ddp {
        Ddp {
            pg,
            sync_bn,
            reduce_seconds: 0.0,
            bn_failure: Rc::new(RefCell::new(None)),
        }
    }

    /// This rank.
    pub fn rank(&self) -> usize {
        self.pg.rank
    }

    /// Averages the gradients over the ranks, in flat buckets. Absent gradients count as
    /// zero where another rank has one and stay absent where no rank has.
    pub(crate) fn average_gradients(
        &mut self,
        grads: &mut [Option<Tensor>],
        params: &[&Tensor],
    ) -> Result<(), DistError> {
        let start = Instant::now();
        let idx = self.reached_anywhere(grads, params)?;
        for bucket in buckets(&idx, |i| params[i].numel() as i64 * 4) {
            self.average_bucket(grads, &bucket)?;
        }
        self.reduce_seconds += start.elapsed().as_secs_f64();
        Ok(())
    }

    /// The indices of the parameters that some rank's terms reached; those absent here get
    /// a zero gradient, so every rank averages the same list.
    fn reached_anywhere(
        &self,
        grads: &mut [Option<Tensor>],
        params: &[&Tensor],
    ) -> Result<Vec<usize>, DistError> {
        let have: Vec<f32> = grads
            .iter()
            .map(|g| f32::from(u8::from(g.is_some())))
            .collect();
        let any = Tensor::from_slice(&have)
            .to_device(params.first().map_or(tch::Device::Cpu, |p| p.device()));
        self.pg.all_reduce(&[&any], false)?;
        let any = Vec::<f32>::try_from(any.to_device(tch::Device::Cpu)).unwrap_or_default();
        let mut idx = Vec::new();
        for (i, g) in grads.iter_mut().enumerate() {
            if any.get(i).copied().unwrap_or(0.0) > 0.0 {
                if g.is_none() {
                    *g = Some(params[i].zeros_like());
                }
                idx.push(i);
            }
        }
        Ok(idx)
    }

    /// Averages the gradients `bucket` (all present) over the ranks in one flat float
    /// buffer, each written back in its own kind.
    fn average_bucket(
        &self,
        grads: &mut [Option<Tensor>],
        bucket: &[usize],
    ) -> Result<(), DistError> {
        let flat = Tensor::cat(
            &bucket
                .iter()
                .map(|&i| {
                    grads[i]
                        .as_ref()
                        .expect("set")
                        .to_kind(Kind::Float)
                        .flatten(0, -1)
                })
                .collect::<Vec<_>>(),
            0,
        );
        self.pg.all_reduce(&[&flat], true)?;
        let mut off = 0;
        for &i in bucket {
            let g = grads[i].as_ref().expect("set");
            let n = g.numel() as i64;
            let avg = flat.narrow(0, off, n).view_as(g).to_kind(g.kind());
            grads[i] = Some(avg);
            off += n;
        }
        Ok(())
    }

    /// Seconds spent in gradient averaging since the last call.
    pub(crate) fn take_reduce_seconds(&mut self) -> f64 {
        std::mem::take(&mut self.reduce_seconds)
    }

    /// Copies rank 0's values of `ts` into every rank's (flattened into one buffer per
    /// dtype run, so a network's worth of small tensors costs few collectives).
    pub fn broadcast(&self, ts: &[Tensor]) -> Result<(), DistError> {
        for group in buckets(&(0..ts.len()).collect::<Vec<_>>(), |i| {
            ts[i].numel() as i64 * 8
        }) {
            let flat = Tensor::cat(
                &group
                    .iter()
                    .map(|&i| ts[i].to_kind(Kind::Double).flatten(0, -1))
                    .collect::<Vec<_>>(),
                0,
            );
            self.pg.broadcast(&[&flat], 0)?;
            let mut off = 0;
            tch::no_grad(|| {
                for &i in &group {
                    let mut t = ts[i].shallow_clone();
                    let n = t.numel() as i64;
                    t.copy_(&flat.narrow(0, off, n).view_as(&t).to_kind(t.kind()));
                    off += n;
                }
            });
        }
        Ok(())
    }

    /// Every variable of `vs` (or only its BN buffers), sorted by name.
    pub fn variables(vs: &nn::VarStore, buffers_only: bool) -> Vec<Tensor> {
        let mut v: Vec<_> = vs
            .variables()
            .into_iter()
            .filter(|(n, _)| !buffers_only || rccr_models::is_buffer(n))
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v.into_iter().map(|(_, t)| t).collect()
    }

    /// Whether `flag` holds on any rank.
    pub fn any(&self, flag: bool) -> Result<bool, DistError> {
        let t = Tensor::from(f32::from(u8::from(flag)));
        self.pg.all_reduce(&[&t], false)?;
        Ok(t.double_value(&[]) > 0.0)
    }

    /// The ranks' rows of `t` (`M x ...`, the same M on every rank), concatenated in
    /// rank order.
    pub(crate) fn gather_rows(&self, t: &Tensor) -> Result<Tensor, DistError> {
        Ok(Tensor::cat(&self.pg.all_gather(t)?, 0))
    }

    /// The mean over the ranks of each value (for logging).
    pub fn mean(&self, values: &[f64]) -> Result<Vec<f64>, DistError> {
        let t = Tensor::from_slice(values);
        self.pg.all_reduce(&[&t], true)?;
        Ok(Vec::<f64>::try_from(t).unwrap_or_default())
    }

    /// Checks that every rank holds bit-identical `tensors` (a 64-bit hash of their bytes,
    /// all-gathered); the error names the first rank that differs from rank 0.
    pub(crate) fn check_identical(&self, tensors: &[Tensor]) -> crate::Result<()> {
        let h = fingerprint(tensors) as i64;
        let all = self.pg.all_gather(&Tensor::from_slice(&[h]))?;
        let hs: Vec<i64> = all.iter().map(|t| t.int64_value(&[0])).collect();
        match hs.iter().position(|&x| x != hs[0]) {
            None => Ok(()),
            Some(r) => Err(crate::Error::DistSetup(format!(
                "rank {r}'s weights differ from rank 0's (fingerprints {:#x} vs {:#x}): the ranks diverged",
                hs[r], hs[0]
            ))),
        }
    }
}

/// FNV-1a over the bytes of every tensor (CPU copies), in order.
pub(crate) fn fingerprint(tensors: &[Tensor]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for t in tensors {
        let c = t
            .to_device(tch::Device::Cpu)
            .contiguous()
            .to_kind(Kind::Double);
        let v = Vec::<f64>::try_from(c.flatten(0, -1)).unwrap_or_default();
        for x in v {
            for b in x.to_bits().to_le_bytes() {
                h ^= u64::from(b);
                h = h.wrapping_mul(0x0000_0100_0000_01b3);
            }
        }
    }
    h
}

/// Consecutive groups of `items` of at most [`BUCKET_BYTES`] each (an item larger than
/// that forms its own group).
fn buckets(items: &[usize], bytes: impl Fn(usize) -> i64) -> Vec<Vec<usize>> {
    let mut out: Vec<Vec<usize>> = Vec::new();
    let mut size = 0;
    for &i in items {
        let b = bytes(i);
        if out.is_empty() || size + b > BUCKET_BYTES {
            out.push(Vec::new());
            size = 0;
        }
        out.last_mut().expect("pushed").push(i);
        size += b;
    }
    out.retain(|g| !g.is_empty());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_hold_at_most_25_mb_in_order() {
        let mb = 1024 * 1024;
        let sizes = [10 * mb, 10 * mb, 10 * mb, 40 * mb, mb];
        let b = buckets(&[0, 1, 2, 3, 4], |i| sizes[i]);
        assert_eq!(b, vec![vec![0, 1], vec![2], vec![3], vec![4]]);
        assert!(buckets(&[], |_| 1).is_empty());
    }
}
