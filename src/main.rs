//! The `ptune` command: a thin layer over the library; each subcommand lives in `cli/`.

mod cli;

/// A training step frees and reallocates the same large tensors. By default glibc serves
/// anything over 128 KiB-32 MiB (its threshold adapts) with mmap and returns it to the OS on
/// free, so every step re-faults and re-zeroes fresh pages (page clearing was 12-19% of a
/// zh-mini fine-tuning step). Serving tensors up to 32 MiB from the heap and keeping up to
/// 256 MiB of free heap resident keeps those pages: +6% fine-tuning throughput on zh-mini
/// (better than mimalloc here); larger tensors still go back to the OS, which bounds peak
/// memory at BERT-base size (a 1 GiB threshold cost +0.8 GB peak RSS there for no speed).
fn keep_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; called before any other thread exists.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, 32 << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, 256 << 20);
        libc::mallopt(libc::M_TOP_PAD, 64 << 20);
    }
}

fn main() {
    keep_freed_memory();
    std::process::exit(cli::main());
}
