//! The GPU path without a GPU: burn's WebGPU backend (`--features wgpu`) on whatever Vulkan
//! device the machine has — Mesa's software driver lavapipe (`apt-get install
//! mesa-vulkan-drivers`) where there is no GPU. This runs the composed kernels
//! (`model/kernels/reference.rs`), the ones CUDA runs too, through a real GPU compiler stack.
//!
//!   cargo test --release --features wgpu --test wgpu_backend
//!
//! Without the feature, the tests here check that `--device` reports the missing backend.

mod common;

use common::*;

#[cfg(not(feature = "wgpu"))]
#[test]
fn device_wgpu_without_the_feature_is_one_line() {
    let o = ptune(&["selftest", "--device", "wgpu"]);
    assert_clean_error(&o, &["--device wgpu", "rebuild with `--features wgpu`"]);
    let o = ptune(&["selftest", "--device", "wgpu:x"]);
    assert_clean_error(&o, &["bad wgpu index"]);
    let o = ptune(&["selftest", "--device", "tpu"]);
    assert_clean_error(&o, &["unknown device \"tpu\"", "wgpu:N"]);
}

/// `ptune selftest --device wgpu`: its stdout.
#[cfg(feature = "wgpu")]
fn selftest_wgpu() -> (bool, String) {
    let o = ptune(&["selftest", "--device", "wgpu"]);
    (
        o.status.success(),
        String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr),
    )
}

/// zh-mini's logits on the WebGPU backend equal transformers' (the committed parity fixture)
/// within selftest's tolerance.
#[cfg(feature = "wgpu")]
#[test]
fn logits_on_wgpu_match_transformers() {
    let (_, out) = selftest_wgpu();
    assert!(
        out.lines()
            .any(|l| l.starts_with("PASS") && l.contains("logits vs transformers")),
        "{out}"
    );
}

/// The whole selftest, one P-tuning step included, on the WebGPU backend.
#[cfg(feature = "wgpu")]
#[test]
#[ignore = "fails on lavapipe (Mesa 22.3.6): loss and listed weights match the CPU reference (5e-6, 6e-7) but whole-tensor sums differ by 4.9e-3 (tolerance 1e-4) through Adam's first step on noise-level gradients; selftest needs an element-wise check, see BENCHMARKS.md \"WebGPU\""]
fn selftest_passes_on_wgpu() {
    let (ok, out) = selftest_wgpu();
    assert!(ok, "{out}");
}
