//! glibc allocator thresholds: a process-wide trade between speed and peak memory.
//!
//! A training step frees and reallocates the same large tensors. By default glibc serves
//! anything over 128 KiB-32 MiB (its threshold adapts) with mmap and returns it to the OS on
//! free, so every step re-faults and re-zeroes fresh pages (page clearing was 12-19% of a
//! zh-mini fine-tuning step). [`Profile::Throughput`] serves tensors up to 32 MiB from the heap
//! and keeps up to 256 MiB of free heap resident: +6% fine-tuning throughput on zh-mini
//! (better than mimalloc here), and 15% faster evaluation at BERT-base size. When every LM
//! weight trains at BERT-base size, the heap kept that way grows to ~1.2 GB beyond what is in
//! use (6.5 vs 5.3-5.5 GB peak RSS); [`Profile::LowPeak`] returns it, for ~10% of that
//! training's speed (measured with `ptune bench --what finetune` on the BERT-base shape).

/// Which allocator behaviour the process wants now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Profile {
    /// Large allocations (up to 32 MiB) from the heap, up to 256 MiB of free heap kept: fastest.
    Throughput,
    /// Smaller thresholds (8 MiB mmap, 64 MiB trim): free memory goes back to the OS sooner, for
    /// a lower peak RSS.
    LowPeak,
}

/// Trainable parameters from which training a whole LM switches to [`Profile::LowPeak`]
/// (zh-mini has 9M, BERT-base 102M).
pub const LOW_PEAK_FROM_PARAMS: usize = 50_000_000;

/// Sets the allocator thresholds of `profile` (no-op off glibc). glibc documents `mallopt` as
/// unsafe against concurrent allocation, so call it while no other thread is working: at
/// start-up, or between training phases when the worker pool is idle.
pub fn use_profile(profile: Profile) {
    let (mmap_mib, trim_mib, pad_mib) = match profile {
        Profile::Throughput => (32, 256, 64),
        Profile::LowPeak => (8, 64, 16),
    };
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: mallopt only changes allocator thresholds; callers keep other threads idle.
    unsafe {
        libc::mallopt(libc::M_MMAP_THRESHOLD, mmap_mib << 20);
        libc::mallopt(libc::M_TRIM_THRESHOLD, trim_mib << 20);
        libc::mallopt(libc::M_TOP_PAD, pad_mib << 20);
    }
    #[cfg(not(all(target_os = "linux", target_env = "gnu")))]
    let _ = (mmap_mib, trim_mib, pad_mib);
}

/// Switches to [`Profile::LowPeak`] while alive and back to [`Profile::Throughput`] on drop,
/// when `trainable_params` is large; otherwise does nothing.
pub struct LowPeakWhileLarge {
    active: bool,
}

impl LowPeakWhileLarge {
    /// Switches to [`Profile::LowPeak`] when `trainable_params` ≥ [`LOW_PEAK_FROM_PARAMS`];
    /// see the type's docs for when to call it.
    pub fn new(trainable_params: usize) -> Self {
        let active = trainable_params >= LOW_PEAK_FROM_PARAMS;
        if active {
            use_profile(Profile::LowPeak);
        }
        LowPeakWhileLarge { active }
    }
}

impl Drop for LowPeakWhileLarge {
    fn drop(&mut self) {
        if self.active {
            use_profile(Profile::Throughput);
        }
    }
}
