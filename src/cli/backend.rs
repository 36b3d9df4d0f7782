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

impl BackendArgs {
    /// How many parts a training batch is split into and computed on in parallel: one per CPU
    /// thread (the CPU backend runs most kernels on one thread), one on a GPU.
    pub fn micro_batches(&self) -> usize {
        if self.device != "cpu" {
            return 1;
        }
        self.threads
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
            .max(1)
    }
}

/// A command body, generic over the (autodiff) backend.
pub trait Job {
    type Output;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Self::Output>;
}

pub fn run_job<J: Job>(args: &BackendArgs, job: J) -> Result<J::Output> {
    if let Some(n) = args.threads {
        // Fails only if the pool was already built; the first setting then stays.
        let _ = rayon::ThreadPoolBuilder::new()
            .num_threads(n.max(1))
            // Workers inherit main's setting on Linux; set it explicitly for other platforms.
            .start_handler(|_| {
                ptune::cpu_env::flush_denormals();
            })
            .build_global();
    }
    let dev = args.device.as_str();
    if dev == "cpu" {
        return job.run::<ptune::CpuTrain>(Default::default());
    }
    if dev == "cuda" || dev.starts_with("cuda:") {
        let index: usize = match dev.strip_prefix("cuda:") {
            Some(i) => i
                .parse()
                .map_err(|_| Error::invalid(format!("--device: bad CUDA index in \"{dev}\"")))?,
            None => 0,
        };
        return run_cuda(job, index);
    }
    Err(Error::invalid(format!(
        "--device: unknown device \"{dev}\" (expected cpu, cuda or cuda:N)"
    )))
}

#[cfg(feature = "cuda")]
fn run_cuda<J: Job>(job: J, index: usize) -> Result<J::Output> {
    job.run::<burn::backend::Autodiff<burn::backend::Cuda>>(burn::backend::cuda::CudaDevice::new(
        index,
    ))
}

#[cfg(not(feature = "cuda"))]
fn run_cuda<J: Job>(_job: J, _index: usize) -> Result<J::Output> {
    Err(Error::invalid(
        "--device cuda: this ptune was built without CUDA support (rebuild with `--features cuda`)",
    ))
}
