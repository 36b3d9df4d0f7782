//! `--precision bf16`: the model's matrix products with bfloat16 operands and results and f32
//! accumulation. The setting is process-wide, so these checks are a test binary of their own
//! and run in one test, in order (the library's unit tests never change it).

mod common;

use burn::module::Param;
use burn::nn::Linear;
use burn::tensor::backend::Backend;
use burn::tensor::{Distribution, Tensor, TensorPrimitive};
use common::*;
use ptune::model::kernels::{self, Precision, reference, set_matmul_precision};

type Cpu = ptune::Cpu;
type CpuTrain = ptune::CpuTrain;

fn values<const D: usize>(t: Tensor<Cpu, D>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn from_prim<const D: usize>(p: burn::tensor::ops::FloatTensor<Cpu>) -> Tensor<Cpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(p))
}

fn round(v: f32) -> f32 {
    half::bf16::from_f32(v).to_f32()
}

fn is_bf16(v: &[f32]) -> bool {
    v.iter().all(|x| x.to_bits() & 0xffff == 0)
}

/// Largest difference between `a` and `b` in units of 2⁻⁸ of `b`'s largest magnitude (one
/// bf16 step there is 1 to 2 units; the scale is the largest magnitude because single
/// entries may cancel to near zero, where the f32 summation order alone moves them by many of
/// their own steps).
fn bf16_steps(a: &[f32], b: &[f32]) -> f32 {
    let scale = b.iter().fold(0.0f32, |m, y| m.max(y.abs())) / 256.0;
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs() / scale)
        .fold(0.0, f32::max)
}

#[test]
fn bf16_products_round_operands_and_results_forward_and_backward() {
    let dev = Default::default();
    <Cpu as Backend>::seed(&dev, 7);
    let a = Tensor::<Cpu, 2>::random([300, 200], Distribution::Normal(0.0, 1.0), &dev);
    let b = Tensor::<Cpu, 2>::random([200, 250], Distribution::Normal(0.0, 1.0), &dev);
    let f32_product = values(kernels::matmul(a.clone(), b.clone()));

    set_matmul_precision(Precision::Bf16);
    // the CPU's emulation is exactly: round the operands, f32 product, round the result
    let fast = values(kernels::matmul(a.clone(), b.clone()));
    let by_hand = {
        let r = |t: Tensor<Cpu, 2>| {
            let dims = t.dims();
            let v: Vec<f32> = values(t).into_iter().map(round).collect();
            Tensor::<Cpu, 2>::from_data(burn::tensor::TensorData::new(v, dims), &dev)
        };
        set_matmul_precision(Precision::F32);
        let y = values(kernels::matmul(r(a.clone()), r(b.clone())));
        set_matmul_precision(Precision::Bf16);
        y.into_iter().map(round).collect::<Vec<f32>>()
    };
    assert_eq!(fast, by_hand);
    assert!(is_bf16(&fast));
    // the reference (what GPUs run: bf16 tensors, cast back) agrees to within one bf16 step
    // (burn's bf16 product sums in its own order, so a result may round the other way)
    let gpu_way = values(from_prim::<2>(reference::matmul::<Cpu>(
        a.clone().into_primitive().tensor(),
        b.clone().into_primitive().tensor(),
    )));
    assert!(
        bf16_steps(&fast, &gpu_way) <= 1.0,
        "{}",
        bf16_steps(&fast, &gpu_way)
    );
    // and bf16 is not f32: the products moved, by about bf16's precision
    let moved = bf16_steps(&fast, &f32_product);
    assert!(moved > 0.01 && moved < 8.0, "moved by {moved} bf16 steps");

    // strided operands (attention's heads and a transposed key), 4-D
    let h = Tensor::<Cpu, 3>::random([3, 9, 16], Distribution::Normal(0.0, 1.0), &dev);
    let q = h.clone().reshape([3, 9, 4, 4]).swap_dims(1, 2);
    let kt = (h * 0.5)
        .reshape([3, 9, 4, 4])
        .swap_dims(1, 2)
        .swap_dims(2, 3);
    let fast = values(kernels::matmul(q.clone(), kt.clone()));
    let gpu_way = values(from_prim::<4>(reference::matmul::<Cpu>(
        q.into_primitive().tensor(),
        kt.into_primitive().tensor(),
    )));
    assert!(is_bf16(&fast) && bf16_steps(&fast, &gpu_way) <= 2.0);

    // a linear layer: the rounded product, then the f32 bias
    let w = Tensor::<Cpu, 2>::random([200, 24], Distribution::Normal(0.0, 0.5), &dev);
    let bias = Tensor::<Cpu, 1>::random([24], Distribution::Default, &dev);
    let layer = Linear {
        weight: Param::from_tensor(w.clone()),
        bias: Some(Param::from_tensor(bias.clone())),
    };
    let y = values(kernels::linear(a.clone(), &layer));
    let want: Vec<f32> = {
        let p = values(kernels::matmul(a.clone(), w.clone()));
        let bv = values(bias);
        p.iter().enumerate().map(|(i, v)| v + bv[i % 24]).collect()
    };
    assert_eq!(y, want);

    // backward: the gradient products are bf16 products too
    let at = Tensor::<CpuTrain, 2>::from_inner(a.clone()).require_grad();
    let bt = Tensor::<CpuTrain, 2>::from_inner(b.clone()).require_grad();
    let g = Tensor::<Cpu, 2>::random([300, 250], Distribution::Normal(0.0, 1.0), &dev);
    let loss = (kernels::matmul(at.clone(), bt.clone()) * Tensor::from_inner(g.clone())).sum();
    let grads = loss.backward();
    let da = values(at.grad(&grads).unwrap());
    let db = values(bt.grad(&grads).unwrap());
    assert_eq!(
        da,
        values(kernels::matmul(g.clone(), b.clone().transpose()))
    );
    assert_eq!(db, values(kernels::matmul(a.clone().transpose(), g)));
    assert!(is_bf16(&da) && is_bf16(&db));

    // back to f32: the f32 numbers again
    set_matmul_precision(Precision::F32);
    assert_eq!(values(kernels::matmul(a, b)), f32_product);
}

/// `ptune train --precision bf16` trains (finite losses, its own numbers), a bad value is
/// refused, and `selftest` (which checks the f32 path) says it does not take bf16.
#[test]
fn precision_flag_trains_in_bf16_and_is_checked() {
    let data = small_data(120, 30);
    let run = |precision: &str| {
        let out = tempfile::tempdir().unwrap();
        let extra = [
            "--method",
            "finetune",
            "--epochs",
            "2",
            "--precision",
            precision,
        ];
        let o = run_owned(&train_args(data.path(), out.path(), &extra));
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        (metrics(out.path()), out)
    };
    let ((f32_run, _), (bf16_run, bf16_dir)) = (run("f32"), run("bf16"));
    assert_ne!(f32_run, bf16_run, "bf16 must change the numbers");
    for (a, b) in f32_run.iter().zip(&bf16_run) {
        let (x, y) = (a["loss"].as_f64().unwrap(), b["loss"].as_f64().unwrap());
        assert!(
            y.is_finite() && (x - y).abs() < 0.05 * x.abs().max(0.1),
            "{x} vs {y}"
        );
    }
    // a bf16 run is not resumed in f32
    let extra = ["--method", "finetune", "--epochs", "2", "--resume"];
    let o = run_owned(&train_args(data.path(), bf16_dir.path(), &extra));
    assert_clean_error(
        &o,
        &["run.json", "the precision (bf16 then, --precision f32 now)"],
    );
    let o = ptune(&["train", "--precision", "fp8"]);
    assert_eq!(o.status.code(), Some(2));
    let said = String::from_utf8_lossy(&o.stderr);
    assert!(
        said.lines().next().unwrap().contains("unknown precision"),
        "{said}"
    );
    let o = ptune(&["selftest", "--precision", "bf16"]);
    assert_clean_error(&o, &["selftest checks the f32 path"]);
}
