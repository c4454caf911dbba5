//! The C ABI of rccr-infer (`librccr_infer.so`, `librccr_infer.a`; declared in
//! `include/rccr_infer.h`, which is the reference for callers): open an rccr ONNX model,
//! query its classes, segment RGB8 frames into caller-owned train-id buffers, close.
//! Perception stacks are mostly C/C++ (ROS 2 nodes, Autoware, Apollo); this lets them
//! embed the same [`Segmenter`] the CLI runs, with identical outputs.
//!
//! Rules every entry point follows:
//! - status 0 ([`RCCR_OK`]) on success, a positive `RCCR_ERR_*` otherwise, with the
//!   message kept per thread for [`rccr_last_error`];
//! - no panic crosses the boundary: each body runs under `catch_unwind` and a panic
//!   becomes [`RCCR_ERR_INTERNAL`];
//! - NULL pointers, non-positive or oversized dimensions and handles that are closed or
//!   were never opened are errors, never dereferenced. Handles are opaque ids looked up
//!   in a registry (never memory addresses), so a stale handle is detected reliably.
//!
//! Thread safety: a handle may be shared by threads; its runs are serialised by a lock
//! inside the handle (one model run at a time per handle: open one handle per thread to
//! run in parallel), and queries never wait for a run. Closing a handle while another
//! thread's run on it is in flight is allowed: that run finishes and the model is freed
//! after it.

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::ffi::{c_char, c_int, CStr, CString, OsStr};
use std::os::unix::ffi::OsStrExt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crate::error::InferError;
use crate::provider::{Provider, SessionOptions};
use crate::segmenter::{Interleaved, Segmenter, SegmenterOptions};

/// Declares the C ABI's `#define`d constants of type `$ty` (include/rccr_infer.h), each
/// with its meaning.
macro_rules! c_constants {
    ($ty:ty; $($(#[doc = $doc:expr])* $name:ident = $value:literal,)*) => {
        $($(#[doc = $doc])* pub const $name: $ty = $value;)*
    };
}

c_constants! { c_int;
    /// Success.
    RCCR_OK = 0,
    /// A NULL pointer, a bad size or an out-of-range option.
    RCCR_ERR_INVALID_ARGUMENT = 1,
    /// The handle is closed or was never returned by `rccr_segmenter_open`.
    RCCR_ERR_BAD_HANDLE = 2,
    /// A file could not be read (the model).
    RCCR_ERR_IO = 3,
    /// The file is not an rccr ONNX model, or ONNX Runtime cannot load it.
    RCCR_ERR_MODEL = 4,
    /// The requested execution provider (CUDA, TensorRT) is unavailable.
    RCCR_ERR_PROVIDER = 5,
    /// The ONNX Runtime library could not be found or loaded.
    RCCR_ERR_RUNTIME = 6,
    /// ONNX Runtime failed while running the model.
    RCCR_ERR_INFERENCE = 7,
    /// An internal error (a caught Rust panic): please report it.
    RCCR_ERR_INTERNAL = 8,
}

c_constants! { i32;
    /// TensorRT, then CUDA, then CPU: the first that works.
    RCCR_PROVIDER_AUTO = 0,
    /// ONNX Runtime's CPU kernels.
    RCCR_PROVIDER_CPU = 1,
    /// CUDA (needs onnxruntime-gpu and the CUDA / cuDNN libraries).
    RCCR_PROVIDER_CUDA = 2,
    /// TensorRT (needs onnxruntime-gpu and TensorRT 10).
    RCCR_PROVIDER_TENSORRT = 3,
}

/// Options of `rccr_segmenter_open` (see the header for each field).
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub struct RccrOptions {
    /// `sizeof(RccrOptions)`, set by `rccr_options_default`.
    pub struct_size: u32,
    /// One of the `RCCR_PROVIDER_*` values.
    pub provider: i32,
    /// ONNX Runtime intra-op threads; 0 = physical cores.
    pub threads: i32,
    /// Model input width; 0 (with height 0) = the model's fixed size, else 1024.
    pub input_width: i32,
    /// Model input height; 0 (with width 0) = the model's fixed size, else 512.
    pub input_height: i32,
    /// Images per model run; 0 = 1.
    pub batch_size: i32,
    /// GPU index for CUDA / TensorRT.
    pub device_id: i32,
    /// Non-zero: let TensorRT use fp16 kernels.
    pub trt_fp16: i32,
    /// TensorRT engine cache folder; NULL = `trt-cache/` next to the model.
    pub trt_cache_dir: *const c_char,
}

/// The opaque handle type of the header (never dereferenced: handles are registry ids).
#[repr(C)]
pub struct RccrSegmenter {
    _private: [u8; 0],
}

/// A failed call: its status and message.
struct Failure {
    status: c_int,
    message: String,
}

fn invalid(message: impl Into<String>) -> Failure {
    Failure {
        status: RCCR_ERR_INVALID_ARGUMENT,
        message: message.into(),
    }
}

/// The status of a library error; `Session` errors count as `RCCR_ERR_MODEL` while
/// opening and `RCCR_ERR_INFERENCE` while running.
fn failure(e: InferError, running: bool) -> Failure {
    let status = match &e {
        InferError::Invalid(_) => RCCR_ERR_INVALID_ARGUMENT,
        InferError::Io { .. } => RCCR_ERR_IO,
        InferError::Provider { .. } => RCCR_ERR_PROVIDER,
        InferError::Runtime(_) => RCCR_ERR_RUNTIME,
        InferError::Session { .. } | InferError::OrtSession { .. } | InferError::Ort(_)
            if running =>
        {
            RCCR_ERR_INFERENCE
        }
        InferError::NotRccrModel { .. }
        | InferError::Session { .. }
        | InferError::OrtSession { .. }
        | InferError::Ort(_) => RCCR_ERR_MODEL,
        _ => RCCR_ERR_INFERENCE,
    };
    Failure {
        status,
        message: e.to_string(),
    }
}

thread_local! {
    static LAST_ERROR: RefCell<CString> = RefCell::new(CString::default());
}

fn set_last_error(message: &str) {
    let c = CString::new(message.replace('\0', "?")).unwrap_or_default();
    LAST_ERROR.with(|l| *l.borrow_mut() = c);
}

fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
    payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into())
}

/// Runs `body` under `catch_unwind`; returns its status and records a failure's message.
fn guard(body: impl FnOnce() -> Result<(), Failure>) -> c_int {
    let failure = match catch_unwind(AssertUnwindSafe(body)) {
        Ok(Ok(())) => return RCCR_OK,
        Ok(Err(f)) => f,
        Err(payload) => Failure {
            status: RCCR_ERR_INTERNAL,
            message: format!(
                "internal error in rccr-infer (a Rust panic, caught at the C boundary): {}; please report it",
                panic_message(&*payload)
            ),
        },
    };
    set_last_error(&failure.message);
    failure.status
}

/// An open model and what queries read without taking the run lock.
struct Handle {
    segmenter: Mutex<Segmenter>,
    class_names: Vec<CString>,
    palette: Vec<[u8; 3]>,
    input_size: (u32, u32),
    batch_size: usize,
    provider: &'static CStr,
}

impl Handle {
    fn lock(&self) -> MutexGuard<'_, Segmenter> {
        // A panic during a run (caught by `guard`) leaves the session usable.
        self.segmenter.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn registry() -> MutexGuard<'static, BTreeMap<usize, Arc<Handle>>> {
    static HANDLES: OnceLock<Mutex<BTreeMap<usize, Arc<Handle>>>> = OnceLock::new();
    HANDLES
        .get_or_init(Default::default)
        .lock()
        .unwrap_or_else(|p| p.into_inner())
}

static NEXT_ID: AtomicUsize = AtomicUsize::new(1);

/// The open handle behind `s`.
fn handle(s: *const RccrSegmenter) -> Result<Arc<Handle>, Failure> {
    if s.is_null() {
        return Err(invalid("the segmenter handle is NULL"));
    }
    registry()
        .get(&(s as usize))
        .cloned()
        .ok_or_else(|| Failure {
            status: RCCR_ERR_BAD_HANDLE,
            message: format!(
                "{s:p} is not an open segmenter (closed, or not returned by rccr_segmenter_open)"
            ),
        })
}

/// Writes `value` to `out`, which must not be NULL.
///
/// # Safety
/// `out` is NULL or valid for a write of `T`.
unsafe fn put<T>(out: *mut T, value: T, name: &str) -> Result<(), Failure> {
    if out.is_null() {
        return Err(invalid(format!("`{name}` is NULL")));
    }
    // SAFETY: non-NULL and, by the caller's contract, valid for writes.
    unsafe { out.write(value) };
    Ok(())
}

fn provider_of(code: i32) -> Result<Provider, Failure> {
    match code {
        RCCR_PROVIDER_AUTO => Ok(Provider::Auto),
        RCCR_PROVIDER_CPU => Ok(Provider::Cpu),
        RCCR_PROVIDER_CUDA => Ok(Provider::Cuda),
        RCCR_PROVIDER_TENSORRT => Ok(Provider::TensorRt),
        other => Err(invalid(format!(
            "options->provider {other}: use RCCR_PROVIDER_AUTO (0), _CPU (1), _CUDA (2) or _TENSORRT (3)"
        ))),
    }
}

fn non_negative(v: i32, name: &str) -> Result<usize, Failure> {
    usize::try_from(v).map_err(|_| invalid(format!("options->{name} is {v}: must be >= 0")))
}

/// The library options of C `options` (NULL = defaults).
///
/// # Safety
/// `options` is NULL or points to an `RccrOptions` whose `trt_cache_dir` is NULL or a
/// NUL-terminated string.
unsafe fn segmenter_options(options: *const RccrOptions) -> Result<SegmenterOptions, Failure> {
    // SAFETY: NULL or a valid RccrOptions (caller's contract).
    let o = match unsafe { options.as_ref() } {
        Some(o) => *o,
        None => rccr_options_default(),
    };
    let want = std::mem::size_of::<RccrOptions>();
    if (o.struct_size as usize) < want {
        return Err(invalid(format!(
            "options->struct_size is {}, expected {want}: initialise the options with rccr_options_default()",
            o.struct_size
        )));
    }
    let input_size = match (o.input_width, o.input_height) {
        (0, 0) => None,
        (w, h) if w > 0 && h > 0 => Some((w as u32, h as u32)),
        (w, h) => {
            return Err(invalid(format!(
            "options->input_width/input_height {w}x{h}: both positive, or both 0 for the default"
        )))
        }
    };
    let trt_cache_dir = (!o.trt_cache_dir.is_null()).then(|| {
        // SAFETY: non-NULL, NUL-terminated by the caller's contract.
        let bytes = unsafe { CStr::from_ptr(o.trt_cache_dir) }.to_bytes();
        PathBuf::from(OsStr::from_bytes(bytes))
    });
    let threads = non_negative(o.threads, "threads")?;
    Ok(SegmenterOptions {
        session: SessionOptions {
            provider: provider_of(o.provider)?,
            device_id: o.device_id,
            trt_cache_dir,
            trt_fp16: o.trt_fp16 != 0,
            intra_threads: (threads > 0).then_some(threads),
        },
        batch_size: non_negative(o.batch_size, "batch_size")?.max(1),
        input_size,
    })
}

/// Default options: auto provider, physical-core threads, the model's input size (else
/// 1024x512), batch 1, device 0.
#[no_mangle]
pub extern "C" fn rccr_options_default() -> RccrOptions {
    RccrOptions {
        struct_size: std::mem::size_of::<RccrOptions>() as u32,
        provider: RCCR_PROVIDER_AUTO,
        threads: 0,
        input_width: 0,
        input_height: 0,
        batch_size: 1,
        device_id: 0,
        trt_fp16: 0,
        trt_cache_dir: std::ptr::null(),
    }
}

fn open_handle(path: PathBuf, options: &SegmenterOptions) -> Result<usize, Failure> {
    let seg = Segmenter::open(&path, options).map_err(|e| failure(e, false))?;
    let info = &seg.info().metadata;
    let class_names = info
        .class_names
        .iter()
        .map(|n| CString::new(n.replace('\0', "?")).unwrap_or_default())
        .collect();
    let provider = match seg.provider() {
        Provider::Cpu | Provider::Auto => c"cpu",
        Provider::Cuda => c"cuda",
        Provider::TensorRt => c"tensorrt",
    };
    let handle = Handle {
        class_names,
        palette: info.palette.clone(),
        input_size: seg.input_size(),
        batch_size: seg.batch_size(),
        provider,
        segmenter: Mutex::new(seg),
    };
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    registry().insert(id, Arc::new(handle));
    Ok(id)
}

/// Opens `model_path` with `options` (NULL = defaults) into `*out`.
///
/// # Safety
/// `model_path` is NULL or NUL-terminated; `options` is NULL or a valid `RccrOptions`;
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_open(
    model_path: *const c_char,
    options: *const RccrOptions,
    out: *mut *mut RccrSegmenter,
) -> c_int {
    guard(|| {
        // SAFETY: NULL is checked by `put`; otherwise valid (caller's contract).
        unsafe { put(out, std::ptr::null_mut(), "out")? };
        if model_path.is_null() {
            return Err(invalid("`model_path` is NULL"));
        }
        // SAFETY: non-NULL and NUL-terminated (caller's contract).
        let bytes = unsafe { CStr::from_ptr(model_path) }.to_bytes();
        // SAFETY: as above.
        let options = unsafe { segmenter_options(options)? };
        let id = open_handle(PathBuf::from(OsStr::from_bytes(bytes)), &options)?;
        // SAFETY: checked non-NULL above.
        unsafe { put(out, id as *mut RccrSegmenter, "out") }
    })
}

/// Number of classes the model predicts.
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_num_classes(
    s: *const RccrSegmenter,
    out: *mut i32,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        // SAFETY: NULL checked by `put`.
        unsafe { put(out, h.class_names.len() as i32, "out") }
    })
}

/// The name of class `class_id` (valid until the handle is closed).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_class_name(
    s: *const RccrSegmenter,
    class_id: i32,
    out: *mut *const c_char,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        let name = usize::try_from(class_id)
            .ok()
            .and_then(|i| h.class_names.get(i))
            .ok_or_else(|| {
                invalid(format!(
                    "class_id {class_id} is outside 0..{}",
                    h.class_names.len()
                ))
            })?;
        // SAFETY: NULL checked by `put`. The string lives in the handle until close.
        unsafe { put(out, name.as_ptr(), "out") }
    })
}

/// The colour of every class, `num_classes x 3` bytes RGB, into `rgb` of `capacity` bytes.
///
/// # Safety
/// `rgb` is NULL or valid for `capacity` bytes of writes.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_palette(
    s: *const RccrSegmenter,
    rgb: *mut u8,
    capacity: i32,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        let need = 3 * h.palette.len();
        if rgb.is_null() {
            return Err(invalid("`rgb` is NULL"));
        }
        if usize::try_from(capacity).map_or(true, |c| c < need) {
            return Err(invalid(format!(
                "capacity {capacity} is too small: the palette needs {need} bytes (3 x classes)"
            )));
        }
        // SAFETY: non-NULL and valid for `capacity` >= `need` bytes (caller's contract).
        let out = unsafe { std::slice::from_raw_parts_mut(rgb, need) };
        out.copy_from_slice(&h.palette.concat());
        Ok(())
    })
}

/// The model input size images are resized to.
///
/// # Safety
/// `width` and `height` are NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_input_size(
    s: *const RccrSegmenter,
    width: *mut i32,
    height: *mut i32,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        if height.is_null() {
            return Err(invalid("`height` is NULL"));
        }
        // SAFETY: NULL checked by `put` and above.
        unsafe {
            put(width, h.input_size.0 as i32, "width")?;
            put(height, h.input_size.1 as i32, "height")
        }
    })
}

/// Images per model run (runs of more images are split into batches of this size).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_batch_size(
    s: *const RccrSegmenter,
    out: *mut i32,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        // SAFETY: NULL checked by `put`.
        unsafe { put(out, h.batch_size as i32, "out") }
    })
}

/// The execution provider that runs the model: "cpu", "cuda" or "tensorrt" (static).
///
/// # Safety
/// `out` is NULL or valid for a write.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_provider(
    s: *const RccrSegmenter,
    out: *mut *const c_char,
) -> c_int {
    guard(|| {
        let h = handle(s)?;
        // SAFETY: NULL checked by `put`; the string is static.
        unsafe { put(out, h.provider.as_ptr(), "out") }
    })
}

/// The checked element counts of a run: (`rgb` bytes, `train_ids` bytes).
fn run_sizes(n: i32, height: i32, width: i32) -> Result<(Interleaved, usize, usize), Failure> {
    let bad = || {
        invalid(format!(
            "n={n}, height={height}, width={width}: all must be positive"
        ))
    };
    let (count, h, w) = (
        usize::try_from(n).ok().filter(|&v| v > 0).ok_or_else(bad)?,
        u32::try_from(height)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(bad)?,
        u32::try_from(width)
            .ok()
            .filter(|&v| v > 0)
            .ok_or_else(bad)?,
    );
    let ids = (w as usize)
        .checked_mul(h as usize)
        .and_then(|p| p.checked_mul(count))
        .filter(|&v| v.checked_mul(3).is_some_and(|b| b <= isize::MAX as usize))
        .ok_or_else(|| invalid(format!("{n} images of {width}x{height} overflow memory")))?;
    let shape = Interleaved {
        count,
        width: w,
        height: h,
    };
    Ok((shape, 3 * ids, ids))
}

/// Shared body of the two run entry points.
///
/// # Safety
/// As [`rccr_segmenter_run_logits`].
unsafe fn run_body(
    s: *mut RccrSegmenter,
    rgb: *const u8,
    (n, height, width): (i32, i32, i32),
    train_ids: *mut u8,
    logits: Option<*mut f32>,
) -> Result<(), Failure> {
    let h = handle(s)?;
    let (shape, rgb_len, ids_len) = run_sizes(n, height, width)?;
    for (ptr_null, name) in [(rgb.is_null(), "rgb"), (train_ids.is_null(), "train_ids")] {
        if ptr_null {
            return Err(invalid(format!("`{name}` is NULL")));
        }
    }
    if logits.is_some_and(|l| l.is_null()) {
        return Err(invalid("`logits` is NULL"));
    }
    let mut seg = h.lock();
    let logits_len = shape.count
        * seg.info().metadata.num_classes
        * seg.input_size().0 as usize
        * seg.input_size().1 as usize;
    // SAFETY: non-NULL, sized by the caller's contract (n x height x width x 3 bytes in,
    // n x height x width bytes out, n x C x H x W floats of logits).
    let (rgb, ids) = unsafe {
        (
            std::slice::from_raw_parts(rgb, rgb_len),
            std::slice::from_raw_parts_mut(train_ids, ids_len),
        )
    };
    // SAFETY: as above.
    let logits = logits.map(|l| unsafe { std::slice::from_raw_parts_mut(l, logits_len) });
    seg.segment_interleaved(rgb, shape, ids, logits)
        .map_err(|e| failure(e, true))
}

/// Segments `n` RGB8 images of `height x width` into `n x height x width` train ids.
///
/// # Safety
/// `rgb` is NULL or holds `n * height * width * 3` bytes; `train_ids` is NULL or has room
/// for `n * height * width` bytes.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_run(
    s: *mut RccrSegmenter,
    rgb: *const u8,
    n: i32,
    height: i32,
    width: i32,
    train_ids: *mut u8,
) -> c_int {
    // SAFETY: forwarded caller's contract.
    guard(|| unsafe { run_body(s, rgb, (n, height, width), train_ids, None) })
}

/// [`rccr_segmenter_run`] also writing the logits (`n x C x H x W` floats at the model
/// input size) into `logits`.
///
/// # Safety
/// As [`rccr_segmenter_run`]; `logits` is NULL or has room for `n * C * H * W` floats.
#[no_mangle]
pub unsafe extern "C" fn rccr_segmenter_run_logits(
    s: *mut RccrSegmenter,
    rgb: *const u8,
    n: i32,
    height: i32,
    width: i32,
    train_ids: *mut u8,
    logits: *mut f32,
) -> c_int {
    // SAFETY: forwarded caller's contract.
    guard(|| unsafe { run_body(s, rgb, (n, height, width), train_ids, Some(logits)) })
}

/// Closes `s` (NULL: nothing happens; a closed or unknown handle: recorded as the last
/// error, nothing else).
#[no_mangle]
pub extern "C" fn rccr_segmenter_close(s: *mut RccrSegmenter) {
    if s.is_null() {
        return;
    }
    guard(|| {
        handle(s)?;
        let removed = registry().remove(&(s as usize));
        drop(removed);
        Ok(())
    });
}

/// The message of the calling thread's last failure ("" before any); valid until the
/// thread's next failing call.
#[no_mangle]
pub extern "C" fn rccr_last_error() -> *const c_char {
    LAST_ERROR.with(|l| l.borrow().as_ptr())
}

/// The library version, e.g. "0.1.0 (ONNX Runtime 1.31.1)" (static).
#[no_mangle]
pub extern "C" fn rccr_version() -> *const c_char {
    static VERSION: OnceLock<CString> = OnceLock::new();
    VERSION
        .get_or_init(|| {
            CString::new(format!(
                "{} (ONNX Runtime {})",
                env!("CARGO_PKG_VERSION"),
                crate::runtime::ORT_VERSION
            ))
            .unwrap_or_default()
        })
        .as_ptr()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn last() -> String {
        // SAFETY: rccr_last_error returns a valid NUL-terminated string.
        unsafe { CStr::from_ptr(rccr_last_error()) }
            .to_string_lossy()
            .into_owned()
    }

    #[test]
    fn a_panic_becomes_an_internal_error_status() {
        let status = guard(|| panic!("boom at the boundary"));
        assert_eq!(status, RCCR_ERR_INTERNAL);
        let m = last();
        assert!(
            m.contains("boom at the boundary") && m.contains("panic"),
            "{m}"
        );
        assert_eq!(guard(|| Ok(())), RCCR_OK);
        // A success keeps the last failure's message (errno-like).
        assert!(last().contains("boom"));
    }

    #[test]
    fn null_and_unknown_handles_are_errors() {
        let mut n = 0;
        // SAFETY: valid out pointer; the handle is NULL / a never-opened id.
        unsafe {
            assert_eq!(
                rccr_segmenter_num_classes(std::ptr::null(), &mut n),
                RCCR_ERR_INVALID_ARGUMENT
            );
            assert!(last().contains("NULL"));
            let bogus = 0xdead_0000usize as *const RccrSegmenter;
            assert_eq!(
                rccr_segmenter_num_classes(bogus, &mut n),
                RCCR_ERR_BAD_HANDLE
            );
            assert!(last().contains("not an open segmenter"), "{}", last());
        }
        rccr_segmenter_close(std::ptr::null_mut());
        rccr_segmenter_close(0xdead_0000usize as *mut RccrSegmenter);
        assert!(last().contains("not an open segmenter"));
    }

    #[test]
    fn option_checks() {
        let mut o = rccr_options_default();
        o.struct_size = 0;
        // SAFETY: pointers to live locals.
        let e = unsafe { segmenter_options(&o) }.unwrap_err();
        assert!(e.message.contains("rccr_options_default"), "{}", e.message);
        let mut o = rccr_options_default();
        o.provider = 9;
        // SAFETY: as above.
        assert!(unsafe { segmenter_options(&o) }.is_err());
        o.provider = RCCR_PROVIDER_CPU;
        o.input_width = 64;
        // SAFETY: as above.
        let e = unsafe { segmenter_options(&o) }.unwrap_err();
        assert!(e.message.contains("64x0"), "{}", e.message);
        o.input_height = 32;
        o.batch_size = 0;
        // SAFETY: as above.
        let s = unsafe { segmenter_options(&o) }.ok().unwrap();
        assert_eq!((s.input_size, s.batch_size), (Some((64, 32)), 1));
        assert_eq!(s.session.provider, Provider::Cpu);
        assert!(run_sizes(0, 1, 1).is_err() && run_sizes(1, -1, 1).is_err());
        assert_eq!(run_sizes(2, 3, 4).ok().map(|r| (r.1, r.2)), Some((72, 24)));
    }
}
