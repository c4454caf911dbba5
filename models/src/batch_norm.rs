//! Batch norm's training-mode forward, with a per-thread replacement: synchronised batch
//! norm across data-parallel ranks (the trainer's `--sync-bn`, as DACS's
//! `use_sync_batchnorm`) installs one around the student's forwards. Every ConvBn of
//! the network calls [`forward_t`]; without a hook it is tch's batch norm.

use std::cell::RefCell;
use std::rc::Rc;
use tch::nn::{self, ModuleT};
use tch::Tensor;

/// A training-mode batch-norm forward: (input, layer) -> output, updating the layer's
/// running statistics.
pub type Hook = Rc<dyn Fn(&Tensor, &nn::BatchNorm) -> Tensor>;

thread_local! {
    static HOOK: RefCell<Option<Hook>> = const { RefCell::new(None) };
}

/// Runs `f` with `hook` replacing every training-mode batch norm on this thread.
pub fn with_hook<T>(hook: Hook, f: impl FnOnce() -> T) -> T {
    let previous = HOOK.with(|h| h.borrow_mut().replace(hook));
    let out = f();
    HOOK.with(|h| *h.borrow_mut() = previous);
    out
}

/// Batch norm of `xs` (`train`: batch statistics, through the hook when one is set).
pub fn forward_t(bn: &nn::BatchNorm, xs: &Tensor, train: bool) -> Tensor {
    if train {
        if let Some(hook) = HOOK.with(|h| h.borrow().clone()) {
            return hook(xs, bn);
        }
    }
    bn.forward_t(xs, train)
}
