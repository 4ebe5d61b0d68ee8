//! The one place a burn backend is chosen. Everything else in `model` is generic over
//! `B: AutodiffBackend` (training) or `B: Backend` (inference) and runs wherever it is sent.

use burn::backend::{Autodiff, Flex};
use burn::tensor::backend::AutodiffBackend;

use super::config::DeviceChoice;
use crate::Result;

/// The CPU training backend: burn's Flex with autodiff.
pub type CpuTrain = Autodiff<Flex>;

/// Work that can run on any backend; `run_on` picks the backend for a `DeviceChoice`.
pub trait BackendTask {
    type Output;
    /// Runs with the autodiff backend `B` on `device` (inference uses `B::InnerBackend`).
    fn run<B: AutodiffBackend>(self, device: B::Device) -> Result<Self::Output>;
}

pub fn run_on<T: BackendTask>(choice: DeviceChoice, task: T) -> Result<T::Output> {
    match choice {
        DeviceChoice::Cpu => task.run::<CpuTrain>(Default::default()),
        #[cfg(feature = "cuda")]
        DeviceChoice::Cuda => task.run::<Autodiff<burn::backend::Cuda>>(Default::default()),
        #[cfg(not(feature = "cuda"))]
        DeviceChoice::Cuda => Err(crate::Error::Config(
            "--device cuda: this build has no GPU support; rebuild with --features cuda".to_owned(),
        )),
    }
}
