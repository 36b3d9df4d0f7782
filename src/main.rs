//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;


/// A training step frees and reallocates the same large tensors. By default glibc serves
/// them with mmap and returns them to the OS on free, so every step re-faults and re-zeroes
/// fresh pages (page clearing was 12-19% of a fine-tuning step). Serving them from the heap
/// and not trimming it keeps the pages: measured +6% fine-tuning, +2% P-tuning throughput
/// (also better than mimalloc here).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 1 << 30);
        libc::mallopt(libc::M_TOP_PAD, 1 << 30);
    }
}

fn main() {
    keep_freed_memory();
    std::process::exit(cli::main());
}
