//! The one device helper every binary uses: parses `auto | cpu | cuda | cuda:N` and
//! refuses CUDA where there is none instead of silently running on the CPU.

use crate::ModelError;
use tch::Device;

/// Resolves a `--device` value. `auto` picks CUDA 0 when available, else the CPU.
pub fn parse_device(spec: &str) -> Result<Device, ModelError> {
    let spec = spec.trim().to_ascii_lowercase();
    let cuda = |i: usize| {
        let n = tch::Cuda::device_count() as usize;
        if n == 0 || !tch::Cuda::is_available() {
            Err(ModelError::Device(format!(
                "--device {spec}: no CUDA device is available (this libtorch sees none); \
                 use --device cpu or run on a GPU host"
            )))
        } else if i >= n {
            Err(ModelError::Device(format!(
                "--device {spec}: only {n} CUDA device(s) present"
            )))
        } else {
            Ok(Device::Cuda(i))
        }
    };
    match spec.as_str() {
        "auto" => Ok(if tch::Cuda::is_available() {
            Device::Cuda(0)
        } else {
            Device::Cpu
        }),
        "cpu" => Ok(Device::Cpu),
        "cuda" | "gpu" => cuda(0),
        s => match s.strip_prefix("cuda:").map(str::parse::<usize>) {
            Some(Ok(i)) => cuda(i),
            _ => Err(ModelError::Device(format!(
                "unknown device `{spec}` (expected auto, cpu, cuda or cuda:N)"
            ))),
        },
    }
}

/// A short human name for logs: `cpu`, `cuda:0`.
pub fn device_name(device: Device) -> String {
    match device {
        Device::Cpu => "cpu".into(),
        Device::Cuda(i) => format!("cuda:{i}"),
        other => format!("{other:?}").to_ascii_lowercase(),
    }
}
