//! Process-wide floating-point settings of the CPU.
//!
//! Subnormal ("denormal") f32 values — magnitudes below ~1.2e-38 — are computed in microcode on
//! many Intel cores, ~100× slower than normal values. Training produces them (tiny softmax
//! probabilities over the vocabulary, and the gradients and Adam moments derived from them),
//! and the matrix products then run at a fraction of their speed: on a Xeon with AVX-512 a
//! zh-mini P-tuning step was 16× slower with subnormals kept than with them flushed
//! (`ptune bench --what ptune`, 3.2 vs 49.7 examples/s, 2026-12-01); AMD Zen cores showed no
//! such penalty. Values that small cannot change a prediction or a loss at f32 precision, so
//! the `ptune` binary flushes them to zero at start-up, as TensorFlow does by default and as
//! `torch.set_flush_denormal(True)` does for PyTorch. Set `PTUNE_DENORMALS=keep` to keep
//! IEEE-754 subnormals (e.g. to compare bit for bit with a reference that keeps them).
//!
//! No crate we know of sets these control bits, so this is a few lines of inline assembly.

/// Environment variable that, set to `keep`, leaves subnormal handling as the platform has it.
pub const DENORMALS_ENV: &str = "PTUNE_DENORMALS";

/// Makes the calling thread flush subnormal f32/f64 results and inputs to zero (x86-64: the
/// FTZ and DAZ bits of MXCSR; aarch64: FPCR.FZ), unless `PTUNE_DENORMALS=keep`. Threads
/// created afterwards inherit the setting (Linux copies the floating-point environment to new
/// threads), so call it at the top of `main`, before any worker pool exists. Returns whether
/// flushing is now on.
pub fn flush_denormals() -> bool {
    if std::env::var(DENORMALS_ENV).is_ok_and(|v| v.eq_ignore_ascii_case("keep")) {
        return false;
    }
    set_flush(true)
}

/// Whether the calling thread currently flushes subnormals to zero.
pub fn flushing_denormals() -> bool {
    get_flush()
}

#[cfg(target_arch = "x86_64")]
const MXCSR_FTZ_DAZ: u32 = (1 << 15) | (1 << 6);

#[cfg(target_arch = "x86_64")]
fn read_mxcsr() -> u32 {
    let mut csr: u32 = 0;
    // SAFETY: stmxcsr stores the 32-bit control/status register to the given address.
    unsafe {
        core::arch::asm!("stmxcsr [{}]", in(reg) &mut csr, options(nostack, preserves_flags));
    }
    csr
}

#[cfg(target_arch = "x86_64")]
fn set_flush(on: bool) -> bool {
    let csr = read_mxcsr();
    let new = if on {
        csr | MXCSR_FTZ_DAZ
    } else {
        csr & !MXCSR_FTZ_DAZ
    };
    // SAFETY: ldmxcsr loads a value that differs from the current one only in FTZ and DAZ,
    // which change how subnormals are rounded, nothing else.
    unsafe {
        core::arch::asm!("ldmxcsr [{}]", in(reg) &new, options(nostack, preserves_flags, readonly));
    }
    get_flush() == on
}

#[cfg(target_arch = "x86_64")]
fn get_flush() -> bool {
    read_mxcsr() & MXCSR_FTZ_DAZ == MXCSR_FTZ_DAZ
}

#[cfg(target_arch = "aarch64")]
const FPCR_FZ: u64 = 1 << 24;

#[cfg(target_arch = "aarch64")]
fn read_fpcr() -> u64 {
    let fpcr: u64;
    // SAFETY: reading FPCR has no side effects.
    unsafe { core::arch::asm!("mrs {}, fpcr", out(reg) fpcr, options(nomem, nostack)) };
    fpcr
}

#[cfg(target_arch = "aarch64")]
fn set_flush(on: bool) -> bool {
    let fpcr = read_fpcr();
    let new = if on { fpcr | FPCR_FZ } else { fpcr & !FPCR_FZ };
    // SAFETY: the written value differs from the current one only in FZ (flush-to-zero).
    unsafe { core::arch::asm!("msr fpcr, {}", in(reg) new, options(nomem, nostack)) };
    get_flush() == on
}

#[cfg(target_arch = "aarch64")]
fn get_flush() -> bool {
    read_fpcr() & FPCR_FZ != 0
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn set_flush(_on: bool) -> bool {
    false
}

#[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
fn get_flush() -> bool {
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 1e-30 × 1e-10, computed anew at each call (the optimiser assumes a fixed floating-point
    /// environment and would otherwise reuse one product across the mode switch).
    #[inline(never)]
    fn subnormal_product() -> f32 {
        std::hint::black_box(1.0e-30_f32) * std::hint::black_box(1.0e-10_f32)
    }

    #[test]
    #[cfg(any(target_arch = "x86_64", target_arch = "aarch64"))]
    fn flushing_turns_subnormal_products_into_zero_and_is_inherited() {
        // Each test runs on its own thread, which ends with the test: nothing to restore.
        assert!(set_flush(false));
        assert!(!flushing_denormals());
        assert!(
            subnormal_product() > 0.0,
            "IEEE mode keeps the subnormal 1e-40"
        );
        assert!(set_flush(true));
        assert!(flushing_denormals());
        assert_eq!(
            subnormal_product(),
            0.0,
            "flush mode must give exactly zero"
        );
        let child = std::thread::spawn(|| (flushing_denormals(), subnormal_product()))
            .join()
            .unwrap();
        assert_eq!(
            child,
            (true, 0.0),
            "a thread started later inherits the setting"
        );
    }
}
