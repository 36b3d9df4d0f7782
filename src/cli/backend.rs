//! Backend selection: every command body is written once, generic over the burn backend,
//! and instantiated here for the CPU (Flex) backend and, with `--features cuda`, for CUDA, and
//! with `--features wgpu`, for burn's WebGPU backend (Vulkan, Metal, DX12).

use clap::Args;

use ptune::error::{Error, Result};
use ptune::model::kernels::{Precision, set_matmul_precision, set_seq_len_multiple};

#[derive(Args, Debug, Clone)]
pub struct BackendArgs {
    /// Compute device: `cpu`; `cuda` / `cuda:N` (a build with `--features cuda`); `wgpu` (the
    /// platform's default adapter, e.g. Mesa's software Vulkan) / `wgpu:N` (the N-th discrete
    /// GPU) (a build with `--features wgpu`).
    #[arg(long, default_value = "cpu")]
    pub device: String,
    /// CPU threads for tensor kernels (default: all cores).
    #[arg(long)]
    pub threads: Option<usize>,
    /// Precision of the matrix products: f32, or bf16 (mixed precision: bf16 operands and
    /// results with f32 accumulation; LayerNorm, softmax, GELU, the loss, the weights and the
    /// optimizer state stay f32). Meant for GPUs; on the CPU bf16 is emulated exactly and is
    /// slower than f32 (it is there to measure what bf16 does to accuracy).
    #[arg(long, default_value = "f32")]
    pub precision: Precision,
    /// Pad every batch to a length that is a multiple of N before the model computes it
    /// (default: 32 on GPUs, which compile and tune kernels for each new shape; 1 on the
    /// CPU). The padding is masked out: results are the same up to float rounding.
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..=4096))]
    pub len_multiple: Option<u64>,
}

/// A compute device, as `--device` names it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Device {
    Cpu,
    /// A CUDA GPU by index (`cuda` is `cuda:0`).
    Cuda(usize),
    /// A WebGPU adapter: the default one, or the N-th discrete GPU.
    Wgpu(Option<usize>),
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
        if dev == "wgpu" || dev.starts_with("wgpu:") {
            return match dev.strip_prefix("wgpu:") {
                Some(i) => i
                    .parse()
                    .map(|i| Device::Wgpu(Some(i)))
                    .map_err(|_| Error::invalid(format!("--device: bad wgpu index in \"{dev}\""))),
                None => Ok(Device::Wgpu(None)),
            };
        }
        Err(Error::invalid(format!(
            "--device: unknown device \"{dev}\" (expected cpu, cuda, cuda:N, wgpu or wgpu:N)"
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

    /// Sizes the CPU thread pool as `--threads` asks, and sets the products' precision.
    fn init(&self) {
        set_matmul_precision(self.precision);
        set_seq_len_multiple(self.len_multiple.map(|m| m as usize));
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
    args.init();
    match args.device()? {
        Device::Cpu => job.run::<ptune::CpuTrain>(Default::default()),
        Device::Cuda(index) => gpu_guarded(&args.device, || run_cuda(job, index)),
        Device::Wgpu(index) => gpu_guarded(&args.device, || run_wgpu(job, index)),
    }
}

pub fn run_infer_job<J: InferJob>(args: &BackendArgs, job: J) -> Result<J::Output> {
    args.init();
    match args.device()? {
        Device::Cpu => job.run::<ptune::Cpu>(Default::default()),
        Device::Cuda(index) => gpu_guarded(&args.device, || run_cuda_infer(job, index)),
        Device::Wgpu(index) => gpu_guarded(&args.device, || run_wgpu_infer(job, index)),
    }
}

/// The first panic message seen while a GPU job runs (on any thread: the GPU runtimes panic
/// on their own threads too, and the job's thread then fails with a secondary message).
static FIRST_PANIC: std::sync::Mutex<Option<String>> = std::sync::Mutex::new(None);

/// Runs a GPU job, turning a panic into a one-line error. burn's CUDA and WebGPU runtimes
/// panic — rather than return an error — when the GPU runs out of memory, the device does not
/// exist or the driver fails; a user should see what happened and what to change, not a
/// backtrace. The panic hook is silenced for the job and restored after it.
fn gpu_guarded<T>(device: &str, job: impl FnOnce() -> Result<T>) -> Result<T> {
    *FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner()) = None;
    let previous = std::panic::take_hook();
    std::panic::set_hook(Box::new(|info| {
        let mut first = FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner());
        if first.is_none() {
            *first = Some(panic_text(info.payload()));
        }
    }));
    let outcome = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
    std::panic::set_hook(previous);
    match outcome {
        Ok(result) => result,
        Err(payload) => {
            let first = FIRST_PANIC.lock().unwrap_or_else(|e| e.into_inner()).take();
            Err(gpu_failure(
                device,
                &first.unwrap_or_else(|| panic_text(&*payload)),
            ))
        }
    }
}

fn panic_text(payload: &(dyn std::any::Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        s.to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown failure".to_string()
    }
}

/// The error for a GPU job that panicked with `msg`: out of memory names the batch sizes to
/// lower; a missing device or driver says so, and so does a device without bf16 for
/// `--precision bf16`; anything else gives the runtime's first line.
fn gpu_failure(device: &str, msg: &str) -> Error {
    let lower = msg.to_lowercase();
    let has = |needles: &[&str]| needles.iter().any(|n| lower.contains(n));
    let first_line = msg.lines().next().unwrap_or("").trim();
    if has(&[
        "out of memory",
        "out_of_memory",
        "outofmemory",
        "allocation failed",
    ]) {
        Error::invalid(format!(
            "--device {device}: the GPU ran out of memory; lower --batch-size (training) or \
             --eval-batch (evaluation), or --max-len ({first_line})"
        ))
    } else if has(&[
        "invalid device ordinal",
        "cuda_error_invalid_device",
        "no possible adapter",
        "no adapter",
        "adapter not found",
        "device found",
    ]) {
        Error::invalid(format!("--device {device}: no such device ({first_line})"))
    } else if lower.contains("bf16") && has(&["not supported", "unsupported", "unavailable"]) {
        Error::invalid(format!(
            "--device {device}: this device cannot compute with bf16 tensors; run with \
             --precision f32 ({first_line})"
        ))
    } else if has(&["cuda_error_no_device", "libcuda", "cuinit", "no cuda"]) {
        Error::invalid(format!(
            "--device {device}: no CUDA driver or GPU found ({first_line})"
        ))
    } else {
        Error::invalid(format!(
            "--device {device}: the GPU backend failed: {first_line}"
        ))
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

#[cfg(feature = "wgpu")]
fn wgpu_device(index: Option<usize>) -> burn::backend::wgpu::WgpuDevice {
    use burn::backend::wgpu::WgpuDevice;
    index.map_or(WgpuDevice::DefaultDevice, WgpuDevice::DiscreteGpu)
}

#[cfg(feature = "wgpu")]
fn run_wgpu<J: Job>(job: J, index: Option<usize>) -> Result<J::Output> {
    job.run::<burn::backend::Autodiff<burn::backend::Wgpu>>(wgpu_device(index))
}

#[cfg(feature = "wgpu")]
fn run_wgpu_infer<J: InferJob>(job: J, index: Option<usize>) -> Result<J::Output> {
    job.run::<burn::backend::Wgpu>(wgpu_device(index))
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu<J: Job>(_job: J, _index: Option<usize>) -> Result<J::Output> {
    Err(no_wgpu())
}

#[cfg(not(feature = "wgpu"))]
fn run_wgpu_infer<J: InferJob>(_job: J, _index: Option<usize>) -> Result<J::Output> {
    Err(no_wgpu())
}

#[cfg(not(feature = "wgpu"))]
fn no_wgpu() -> Error {
    Error::invalid(
        "--device wgpu: this ptune was built without WebGPU support (rebuild with `--features wgpu`)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn gpu_panics_become_one_line_errors() {
        // a panic on the job's own thread
        let e = gpu_guarded("cuda:0", || -> Result<()> {
            panic!("CUDA_ERROR_OUT_OF_MEMORY: out of memory\nstack backtrace: ...")
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with("--device cuda:0: the GPU ran out of memory; lower --batch-size"),
            "{e}"
        );
        assert!(!e.contains('\n'), "{e}");
        // a panic on a runtime thread: its message wins over the job's secondary one
        let e = gpu_guarded("cuda:7", || -> Result<()> {
            let worker = std::thread::spawn(|| panic!("invalid device ordinal"));
            worker.join().expect("the runtime thread is gone");
            Ok(())
        })
        .unwrap_err()
        .to_string();
        assert_eq!(
            e,
            "--device cuda:7: no such device (invalid device ordinal)"
        );
        // what burn's wgpu backend says on Mesa's software Vulkan for bf16 products
        let bf16 = "called `Result::unwrap()` on an `Err` value: Unable to launch matmul because \
                    a required feature is unavailable: Types lhs=Scalar(Float(BF16)) not supported.";
        let e = gpu_failure("wgpu", bf16).to_string();
        assert!(
            e.starts_with("--device wgpu: this device cannot compute with bf16 tensors; run with --precision f32 ("),
            "{e}"
        );
        let e = gpu_failure("wgpu", "shader compilation failed: x").to_string();
        assert_eq!(
            e,
            "--device wgpu: the GPU backend failed: shader compilation failed: x"
        );
        // a job that succeeds or fails normally is untouched
        assert_eq!(gpu_guarded("cuda", || Ok(3)).unwrap(), 3);
        let e = gpu_guarded("cuda", || -> Result<()> { Err(Error::invalid("plain")) });
        assert_eq!(e.unwrap_err().to_string(), "plain");
    }
}
