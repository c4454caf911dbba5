//! Host-to-device copies that do not stall the device queue. libtorch's plain
//! `to_device` from host memory ends with a stream synchronisation on CUDA: the host
//! waits until every queued kernel has run, so the device then idles while the host
//! queues the next ones. A non-blocking copy from pageable memory is staged by the
//! driver before the call returns (safe to free, no device wait); batches go through
//! page-locked (pinned) memory so that their larger copies overlap the device's work
//! (docs/gpu-acceptance.md, "What the speed work changed"). On the CPU both are plain
//! `to_device`.

use tch::{Device, Kind, Tensor};

/// A small host tensor (a kernel, a table, indices) on `device`, without waiting for the
/// device's queue.
pub(crate) fn small(t: &Tensor, device: Device) -> Tensor {
    if device.is_cuda() && t.device() == Device::Cpu {
        t.to_device_(device, t.kind(), true, false)
    } else {
        t.to_device(device)
    }
}

/// A batch on `device` as `kind`: from host memory through a pinned copy and a
/// non-blocking transfer on CUDA; otherwise `to_device` (a no-op on the same device).
pub(crate) fn batch(t: &Tensor, device: Device, kind: Kind) -> Tensor {
    if device.is_cuda() && t.device() == Device::Cpu {
        let pinned = if t.is_pinned(device) {
            t.shallow_clone()
        } else {
            t.pin_memory(device)
        };
        pinned
            .to_device_(device, t.kind(), true, false)
            .to_kind(kind)
    } else {
        t.to_device(device).to_kind(kind)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn on_the_cpu_both_are_plain_copies() {
        let t = Tensor::from_slice(&[1i64, 2, 3]);
        assert_eq!(
            Vec::<i64>::try_from(&small(&t, Device::Cpu)).unwrap(),
            vec![1, 2, 3]
        );
        let b = batch(&t, Device::Cpu, Kind::Float);
        assert_eq!(b.kind(), Kind::Float);
        assert_eq!(Vec::<f32>::try_from(&b).unwrap(), vec![1.0, 2.0, 3.0]);
    }
}
