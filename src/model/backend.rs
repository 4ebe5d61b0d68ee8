//! The one place a burn backend is chosen. Everything else in `model` is generic over
//! `B: AutodiffBackend` (training) or `B: Backend` (inference) and runs wherever it is sent.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;
use serde::Serialize;

use super::config::DeviceChoice;
use crate::{Error, Result};
use crate::transcoder::sparse::SparseOps;

/// The CPU training backend: burn's Flex with autodiff.
pub type CpuTrain = Autodiff<Flex>;

/// Work that can run on any backend; `run_on` picks the backend for a `DeviceChoice`.
pub trait BackendTask {
    type Output;
    /// Runs with the autodiff backend `B` on `device` (inference uses `B::InnerBackend`).
    fn run<B: AutodiffBackend + SparseOps>(self, device: B::Device) -> Result<Self::Output>;
    /// The work and its size, and which settings shrink it: what a GPU out-of-memory error says.
    fn describe(&self) -> String;
}

pub fn run_on<T: BackendTask>(choice: DeviceChoice, task: T) -> Result<T::Output> {
    match choice.check()? {
        DeviceChoice::Cpu => task.run::<CpuTrain>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => run_on_gpu::<Autodiff<burn::backend::Cuda>, T>(task),
        #[cfg(feature = "wgpu")]
        DeviceChoice::Wgpu => run_on_gpu::<Autodiff<burn::backend::Wgpu>, T>(task),
        #[allow(unreachable_patterns)]
        _ => unreachable!("check refuses the devices this build lacks"),
    }
}

/// `task` on the GPU backend `B`'s default device, under `gpu_guard`.
#[cfg(any(feature = "cuda", feature = "wgpu"))]
fn run_on_gpu<B: AutodiffBackend + SparseOps, T: BackendTask>(task: T) -> Result<T::Output> {
    let what = task.describe();
    gpu_guard(&what, || task.run::<B>(Default::default()))
}

/// Runs GPU work so that a failure inside the backend comes back as an error naming the work, its
/// size and what to lower, rather than a crash: burn's CUDA backend panics when memory runs out,
/// at a kernel launch (cubecl's `LaunchError::OutOfMemory`) or, more often, where cubecl-cuda
/// reserves a buffer (`IoError::BufferTooBig`, "can't allocate buffer of size: N", unwrapped in
/// its server). Outputs are written by rename, so nothing half-written is left behind.
pub fn gpu_guard<T>(what: &str, work: impl FnOnce() -> Result<T>) -> Result<T> {
    let hook = std::panic::take_hook();
    std::panic::set_hook(Box::new(|_| {})); // the error below says it once
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(work));
    std::panic::set_hook(hook);
    let payload = match outcome {
        Ok(result) => return result,
        Err(payload) => payload,
    };
    let message = payload.downcast_ref::<String>().map(String::as_str).or_else(|| payload.downcast_ref::<&str>().copied()).unwrap_or("");
    let lower = message.to_lowercase();
    const BUFFER: &str = "can't allocate buffer of size: ";
    if let Some(at) = lower.find(BUFFER) {
        let bytes: String = lower[at + BUFFER.len()..].chars().take_while(char::is_ascii_digit).collect();
        let gib = bytes.parse::<f64>().map_or(String::new(), |b| format!(" (a buffer of {:.1} GiB)", b / (1u64 << 30) as f64));
        return Err(Error::Other(format!("the GPU ran out of memory{gib} in {what}")));
    }
    if ["out of memory", "out-of-memory", "outofmemory"].iter().any(|m| lower.contains(m)) {
        return Err(Error::Other(format!("the GPU ran out of memory in {what}")));
    }
    let first = message.lines().find(|l| !l.trim().is_empty()).unwrap_or("no message");
    Err(Error::Other(format!("the GPU backend failed in {what}: {first}")))
}

/// A burn CPU backend to compare (`voltlens bench model --backend`). Flex is the one every stage
/// uses; burn-ndarray and Candle exist only in builds with the `ndarray` / `candle` features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum CpuBackend {
    #[default]
    Flex,
    Ndarray,
    Candle,
}

impl CpuBackend {
    pub fn name(self) -> &'static str {
        match self {
            CpuBackend::Flex => "flex",
            CpuBackend::Ndarray => "ndarray",
            CpuBackend::Candle => "candle",
        }
    }
}

impl std::fmt::Display for CpuBackend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for CpuBackend {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "flex" => Ok(CpuBackend::Flex),
            "ndarray" => Ok(CpuBackend::Ndarray),
            "candle" => Ok(CpuBackend::Candle),
            other => Err(Error::Config(format!("unknown backend '{other}' (expected flex, ndarray or candle)"))),
        }
    }
}

/// Runs `task` on the CPU with `backend` (with autodiff), or says which cargo feature it needs.
pub fn run_on_cpu<T: BackendTask>(backend: CpuBackend, task: T) -> Result<T::Output> {
    match backend {
        CpuBackend::Flex => task.run::<CpuTrain>(Default::default()),
        #[cfg(feature = "ndarray")]
        CpuBackend::Ndarray => task.run::<Autodiff<burn::backend::NdArray>>(Default::default()),
        // burn 0.21 marks burn-candle deprecated; it is here only to be measured against Flex.
        #[cfg(feature = "candle")]
        #[allow(deprecated)]
        CpuBackend::Candle => task.run::<Autodiff<burn::backend::Candle>>(Default::default()),
        #[allow(unreachable_patterns)]
        other => Err(Error::Config(format!(
            "--backend {other}: this build has no {other} backend; rebuild with --features {other}"
        ))),
    }
}
