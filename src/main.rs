//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;

#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    // Keep freed memory instead of returning it to the OS after 10 ms: a training step frees
    // and reallocates the same large tensors, and re-faulting them cost ~15% of a step.
    // 15 = mi_option_purge_delay in mimalloc v2's option enum (no Rust constant is exported).
    // SAFETY: sets a process-wide allocator option; no memory is touched.
    unsafe { libmimalloc_sys::mi_option_set(15, -1) };
    std::process::exit(cli::main());
}
