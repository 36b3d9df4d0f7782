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

/// `ptune ARGS` with a valid `XDG_RUNTIME_DIR` (without one the Vulkan loader's window-system
/// probe prints a line to stderr on a headless machine).
#[cfg(feature = "wgpu")]
fn ptune_vk(args: &[&str]) -> std::process::Output {
    use std::os::unix::fs::PermissionsExt;
    let xdg = tempfile::tempdir().unwrap();
    std::fs::set_permissions(xdg.path(), std::fs::Permissions::from_mode(0o700)).unwrap();
    std::process::Command::new(env!("CARGO_BIN_EXE_ptune"))
        .args(args)
        .env("XDG_RUNTIME_DIR", xdg.path())
        .current_dir(repo())
        .output()
        .expect("run ptune")
}

/// `ptune selftest --device wgpu`: its stdout.
#[cfg(feature = "wgpu")]
fn selftest_wgpu() -> (bool, String) {
    let o = ptune_vk(&["selftest", "--device", "wgpu"]);
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
fn selftest_passes_on_wgpu() {
    let (ok, out) = selftest_wgpu();
    assert!(ok, "{out}");
}

/// A WebGPU adapter that does not exist is a one-line error (the runtime panics; the CLI
/// turns the panic into an error), not a panic message.
#[cfg(feature = "wgpu")]
#[test]
fn a_missing_wgpu_device_is_one_line() {
    let o = ptune_vk(&["selftest", "--device", "wgpu:7"]);
    assert_clean_error(&o, &["--device wgpu:7: no such device"]);
    // lavapipe has no bf16: `--precision bf16` says so in one line
    let out = tempfile::tempdir().unwrap();
    let o = ptune_vk(&[
        "train",
        "--method",
        "zeroshot",
        "--device",
        "wgpu",
        "--precision",
        "bf16",
        "--quiet",
        "--out",
        out.path().to_str().unwrap(),
    ]);
    assert_clean_error(
        &o,
        &["cannot compute with bf16 tensors; run with --precision f32"],
    );
}
