//! Backend selection: every command body is written once, generic over the burn backend,
//! and instantiated here for the CPU (Flex) backend and, with `--features cuda`, for CUDA.

use clap::Args;

use ptune::error::{Error, Result};

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Compute device: `cpu`, or `cuda` / `cuda:N` (needs a build with `--features cuda`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads for tensor kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
}

/// A compute device, as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by index (`cuda` is `cuda:0`).
    Cuda(usize),
}

impl std::str::FromStr for Device {
    type Err = Error;
    /// `cpu`, `cuda` or `cuda:N`; the errors are the messages `--device` reports.
    fn from_str(dev: &str) -> Result<Self> {
        if dev == "cpu" {
            return Ok(Device::Cpu);
        }
        if dev == "cuda" || dev.starts_with("cuda:") {
            return match dev.strip_prefix("cuda:") {
                Some(i) => i
                    .parse()
                    .map(Device::Cuda)
                    .map_err(|_| Error::invalid(format!("--device: bad CUDA index in \"{dev}\""))),
                None => Ok(Device::Cuda(0)),
            };
        }
        Err(Error::invalid(format!(
            "--device: unknown device \"{dev}\" (expected cpu, cuda or cuda:N)"
        )))
    }
}

impl BackendArgs {
    /// The device `--device` names.
    pub fn device(&self) -> Result<Device> {
        self.device.parse()
    }

    /// How many parts a training batch is split into and computed on in parallel: one per CPU
    /// thread (the CPU backend runs most kernels on one thread), one on a GPU.
    pub fn micro_batches(&self) -> usize {
        if !matches!(self.device(), Ok(Device::Cpu)) {
            return 1;
        }
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }

    /// Sizes the CPU thread pool as `--threads` asks.
    fn init_threads(&self) {
        if let Some(n) = self.threads {
            // Fails only if the pool was already built; the first setting then stays.
            let _ = rayon::ThreadPoolBuilder::new()
                .num_threads(n.max(1))
                // Workers inherit main's setting on Linux; set it explicitly for other platforms.
                .start_handler(|_| {
                    ptune::cpu_env::flush_denormals();
                })
                .build_global();
        }
    }
}

/// A command body that trains, generic over the autodiff backend.
pub trait Job {
    type Output;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Self::Output>;
}

/// A command body that only runs models (no gradients), generic over the backend.
pub trait InferJob {
    type Output;
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<Self::Output>;
}

pub fn run_job<J: Job>(args: &BackendArgs, job: J) -> Result<J::Output> {
    args.init_threads();
    match args.device()? {
        Device::Cpu => job.run::<ptune::CpuTrain>(Default::default()),
        Device::Cuda(index) => run_cuda(job, index),
    }
}

pub fn run_infer_job<J: InferJob>(args: &BackendArgs, job: J) -> Result<J::Output> {
    args.init_threads();
    match args.device()? {
        Device::Cpu => job.run::<ptune::Cpu>(Default::default()),
        Device::Cuda(index) => run_cuda_infer(job, index),
    }
}

#[cfg(feature = "cuda")]
fn run_cuda<J: Job>(job: J, index: usize) -> Result<J::Output> {
    job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::new(
        index,
    ))
}

#[cfg(feature = "cuda")]
fn run_cuda_infer<J: InferJob>(job: J, index: usize) -> Result<J::Output> {
    job.run::<burn::backend::Cuda>(burn::backend::cuda::CudaDevice::new(index))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: Job>(_job: J, _index: usize) -> Result<J::Output> {
    Err(no_cuda())
}

#[cfg(not(feature = "cuda"))]
fn run_cuda_infer<J: InferJob>(_job: J, _index: usize) -> Result<J::Output> {
    Err(no_cuda())
}

#[cfg(not(feature = "cuda"))]
fn no_cuda() -> Error {
    Error::invalid(
        "--device cuda: this ptune was built without CUDA support (rebuild with `--features cuda`)",
    )
}
