//! A c10d process group from Rust: the C functions of `trainer/csrc/dist.cpp` (a
//! TCPStore rendezvous, then Gloo on the CPU or NCCL on CUDA) behind a safe type. Every
//! failure comes back as [`DistError`] with c10d's own message; a peer that never comes
//! or dies makes the waiting call fail after the group's timeout instead of hanging.

use std::ffi::{c_char, c_int, c_void, CStr, CString};
use tch::Tensor;

extern "C" {
    fn rccr_dist_last_error() -> *const c_char;
    fn rccr_dist_init(
        backend: *const c_char,
        host: *const c_char,
        port: c_int,
        rank: c_int,
        size: c_int,
        timeout_s: c_int,
        is_server: c_int,
        prefix: *const c_char,
        out: *mut *mut c_void,
    ) -> c_int;
    fn rccr_dist_free(group: *mut c_void);
    fn rccr_dist_allreduce(
        group: *mut c_void,
        ts: *const *mut c_void,
        n: c_int,
        op: c_int,
    ) -> c_int;
    fn rccr_dist_broadcast(
        group: *mut c_void,
        ts: *const *mut c_void,
        n: c_int,
        root: c_int,
    ) -> c_int;
    fn rccr_dist_allgather(
        group: *mut c_void,
        input: *mut c_void,
        outs: *const *mut c_void,
    ) -> c_int;
    fn rccr_dist_barrier(group: *mut c_void) -> c_int;
    fn rccr_dist_allreduce_sum_autograd(
        group: *mut c_void,
        x: *mut c_void,
        out: *mut *mut c_void,
    ) -> c_int;
}

/// A failed collective or rendezvous.
#[derive(Debug, thiserror::Error)]
#[error("c10d {op} failed (rank {rank} of {size}): {message}")]
pub struct DistError {
    /// What was being done.
    pub op: &'static str,
    /// This process's rank.
    pub rank: usize,
    /// The world size.
    pub size: usize,
    /// c10d's message.
    pub message: String,
}

/// Where and how to meet the other ranks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupConfig {
    /// `gloo` or `nccl`.
    pub backend: String,
    /// The TCPStore's host.
    pub host: String,
    /// The TCPStore's port.
    pub port: u16,
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub size: usize,
    /// Seconds before a rendezvous or collective gives up.
    pub timeout_s: u32,
    /// Host the TCPStore (rank 0, unless a launcher's agent already hosts it).
    pub host_store: bool,
}

/// A process group (all ranks of the run).
#[derive(Debug)]
pub struct ProcessGroup {
    raw: *mut c_void,
    /// This process's rank.
    pub rank: usize,
    /// Number of processes.
    pub size: usize,
}

// SAFETY: the c10d group is used from the training thread only; it is moved, not shared.
unsafe impl Send for ProcessGroup {}

fn ptrs(ts: &[&Tensor]) -> Vec<*mut c_void> {
    ts.iter().map(|t| t.as_ptr() as *mut c_void).collect()
}

impl ProcessGroup {
    /// Rendezvous through the TCPStore and creates the backend's group.
    pub fn init(c: &GroupConfig) -> Result<ProcessGroup, DistError> {
        let err = |message: String| DistError {
            op: "init",
            rank: c.rank,
            size: c.size,
            message,
        };
        let backend = CString::new(c.backend.clone()).map_err(|e| err(e.to_string()))?;
        let host = CString::new(c.host.clone()).map_err(|e| err(e.to_string()))?;
        let prefix = CString::default();
        let mut raw = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings and an out pointer; the shim catches exceptions.
        let rc = unsafe {
            rccr_dist_init(
                backend.as_ptr(),
                host.as_ptr(),
                c_int::from(c.port),
                c.rank as c_int,
                c.size as c_int,
                c.timeout_s as c_int,
                c_int::from(c.host_store),
                prefix.as_ptr(),
                &mut raw,
            )
        };
        if rc != 0 {
            return Err(err(last_error()));
        }
        Ok(ProcessGroup {
            raw,
            rank: c.rank,
            size: c.size,
        })
    }

    fn check(&self, op: &'static str, rc: c_int) -> Result<(), DistError> {
        if rc == 0 {
            Ok(())
        } else {
            Err(DistError {
                op,
                rank: self.rank,
                size: self.size,
                message: last_error(),
            })
        }
    }

    /// Sums (or averages, `average`) each tensor over the ranks, in place.
    pub fn all_reduce(&self, ts: &[&Tensor], average: bool) -> Result<(), DistError> {
        let p = ptrs(ts);
        // SAFETY: live tensor handles for the duration of the call.
        let rc = unsafe {
            rccr_dist_allreduce(self.raw, p.as_ptr(), p.len() as c_int, c_int::from(average))
        };
        self.check("all-reduce", rc)
    }

    /// Copies each tensor of rank `root` into the same tensor of every rank.
    pub fn broadcast(&self, ts: &[&Tensor], root: usize) -> Result<(), DistError> {
        let p = ptrs(ts);
        // SAFETY: as above.
        let rc =
            unsafe { rccr_dist_broadcast(self.raw, p.as_ptr(), p.len() as c_int, root as c_int) };
        self.check("broadcast", rc)
    }

    /// Every rank's `t`, in rank order (each shaped like `t`).
    pub fn all_gather(&self, t: &Tensor) -> Result<Vec<Tensor>, DistError> {
        let t = t.contiguous();
        let outs: Vec<Tensor> = (0..self.size).map(|_| t.empty_like()).collect();
        let p = ptrs(&outs.iter().collect::<Vec<_>>());
        // SAFETY: `outs` has `size` live tensors shaped like `t`.
        let rc = unsafe { rccr_dist_allgather(self.raw, t.as_ptr() as *mut c_void, p.as_ptr()) };
        self.check("all-gather", rc)?;
        Ok(outs)
    }

    /// Waits for every rank.
    pub fn barrier(&self) -> Result<(), DistError> {
        // SAFETY: a live group.
        let rc = unsafe { rccr_dist_barrier(self.raw) };
        self.check("barrier", rc)
    }

    /// The sum over ranks of `x`, differentiable (its gradient is the sum of the ranks'
    /// gradients): what synchronised batch norm needs.
    pub(crate) fn all_reduce_sum_autograd(&self, x: &Tensor) -> Result<Tensor, DistError> {
        let mut out = std::ptr::null_mut();
        // SAFETY: a live tensor; on success the shim hands over a new tensor handle.
        let rc = unsafe {
            rccr_dist_allreduce_sum_autograd(self.raw, x.as_ptr() as *mut c_void, &mut out)
        };
        self.check("all-reduce (autograd)", rc)?;
        // SAFETY: `out` is a fresh `at::Tensor*` owned by us from here on.
        Ok(unsafe { Tensor::from_ptr(out as *mut torch_sys::C_tensor) })
    }
}

impl Drop for ProcessGroup {
    fn drop(&mut self) {
        // SAFETY: created by rccr_dist_init and freed once.
        unsafe { rccr_dist_free(self.raw) }
    }
}

fn last_error() -> String {
    // SAFETY: the shim returns a NUL-terminated thread-local string.
    unsafe { CStr::from_ptr(rccr_dist_last_error()) }
        .to_string_lossy()
        .into_owned()
}
