//! The CPU kernels against burn's ops and against the reference versions (the ones GPUs run),
//! values and gradients.

use burn::tensor::activation::{gelu, softmax};
use burn::tensor::ops::FloatTensor;
use burn::tensor::{Distribution, Int, Tensor, TensorData, TensorPrimitive};

use super::*;
use crate::{Cpu, CpuTrain};

fn max_diff<const D: usize>(a: Tensor<Cpu, D>, b: Tensor<Cpu, D>) -> f32 {
    (a - b).abs().max().into_scalar()
}

fn p<const D: usize>(t: Tensor<Cpu, D>) -> FloatTensor<Cpu> {
    t.into_primitive().tensor()
}

fn t<const D: usize>(x: FloatTensor<Cpu>) -> Tensor<Cpu, D> {
    Tensor::from_primitive(TensorPrimitive::Float(x))
}

#[test]
fn kernels_match_burn_ops() {
    let dev = Default::default();
    let x = Tensor::<Cpu, 3>::random([3, 17, 40], Distribution::Normal(0.0, 3.0), &dev);
    // absolute error of x·Φ(x) grows with |x|: compare relative to max(1, |x|)
    let err = (gelu_exact(x.clone()) - gelu(x.clone())).abs() / x.clone().abs().clamp_min(1.0);
    assert!(err.max().into_scalar() < 5e-7);
    for (x, want) in [
        (0.0f32, 0.0f32),
        (1.0, 0.841_344_7),
        (-1.0, -0.158_655_26),
        (3.0, 2.995_950_4),
        (-3.0, -0.004_049_6),
    ] {
        let x1 = Tensor::<Cpu, 1>::from_floats([x], &dev);
        let got: f32 = gelu_exact(x1).into_scalar();
        assert!((got - want).abs() < 1e-6, "gelu({x}) = {got}, want {want}");
    }
    let scores = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 4.0), &dev);
    let bias = Tensor::<Cpu, 4>::from_data(
        [
            [[[
                0.0f32,
                0.0,
                f32::NEG_INFINITY,
                0.0,
                0.0,
                0.0,
                f32::NEG_INFINITY,
            ]]],
            [[[0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]],
        ],
        &dev,
    );
    let fused = softmax_with_bias(scores.clone(), bias.clone());
    assert!(max_diff(fused, softmax(scores + bias, 3)) < 1e-6);
    let heads = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
    let merged = merge_heads(heads.clone());
    assert_eq!(
        max_diff(merged, heads.swap_dims(1, 2).reshape([2, 5, 12])),
        0.0
    );
}

/// One bias row for the whole batch (`[1, 1, 1, n]`, as a batch of equal-length rows gets)
/// gives the same as that row repeated for every example (`[b, 1, 1, n]`), in the CPU kernel
/// and in the reference, and both agree with burn's softmax of the broadcast sum.
#[test]
fn softmax_bias_broadcasts_over_the_batch() {
    let dev = Default::default();
    let scores = Tensor::<Cpu, 4>::random([3, 2, 4, 6], Distribution::Normal(0.0, 4.0), &dev);
    let row = [0.0f32, -1.5, f32::NEG_INFINITY, 0.25, -10000.0, 0.0];
    let shared = Tensor::<Cpu, 4>::from_data(TensorData::new(row.to_vec(), [1, 1, 1, 6]), &dev);
    let per_row = Tensor::<Cpu, 4>::from_data(TensorData::new(row.repeat(3), [3, 1, 1, 6]), &dev);
    let want = softmax(scores.clone() + shared.clone(), 3);
    for bias in [shared, per_row] {
        let cpu = softmax_with_bias(scores.clone(), bias.clone());
        let reference = t::<4>(reference::softmax_with_bias::<Cpu>(
            p(scores.clone()),
            p(bias),
        ));
        assert!(max_diff(cpu.clone(), want.clone()) < 1e-6);
        assert!(max_diff(reference, want.clone()) < 1e-6);
    }
    let a = softmax_with_bias(
        scores.clone(),
        Tensor::from_data(TensorData::new(row.to_vec(), [1, 1, 1, 6]), &dev),
    );
    let b = softmax_with_bias(
        scores,
        Tensor::from_data(TensorData::new(row.repeat(3), [3, 1, 1, 6]), &dev),
    );
    assert_eq!(max_diff(a, b), 0.0, "shared and per-row bias differ");
}

#[test]
fn gradients_match_burn_ops() {
    let dev = Default::default();
    let x0 = Tensor::<Cpu, 2>::random([4, 33], Distribution::Normal(0.0, 2.0), &dev);
    let w = Tensor::<CpuTrain, 2>::random([4, 33], Distribution::Default, &dev);
    let grad_of = |fused: bool| {
        let x = Tensor::<CpuTrain, 2>::from_inner(x0.clone()).require_grad();
        let y = if fused {
            gelu_exact(x.clone())
        } else {
            gelu(x.clone())
        };
        let g = (y * w.clone()).sum().backward();
        x.grad(&g).unwrap()
    };
    assert!(max_diff(grad_of(true), grad_of(false)) < 2e-6);

    let s0 = Tensor::<Cpu, 4>::random([2, 2, 3, 6], Distribution::Normal(0.0, 2.0), &dev);
    let ws = Tensor::<CpuTrain, 4>::random([2, 2, 3, 6], Distribution::Default, &dev);
    let zeros = Tensor::<CpuTrain, 4>::zeros([2, 1, 1, 6], &dev);
    let grad_of = |fused: bool| {
        let s = Tensor::<CpuTrain, 4>::from_inner(s0.clone()).require_grad();
        let y = if fused {
            softmax_with_bias(s.clone(), zeros.clone())
        } else {
            softmax(s.clone(), 3)
        };
        let g = (y * ws.clone()).sum().backward();
        s.grad(&g).unwrap()
    };
    assert!(max_diff(grad_of(true), grad_of(false)) < 1e-6);

    // layer norm: gradients for the input, the weight and the bias
    let x0 = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Normal(1.0, 2.0), &dev);
    let w0 = Tensor::<Cpu, 1>::random([40], Distribution::Normal(1.0, 0.5), &dev);
    let b0 = Tensor::<Cpu, 1>::random([40], Distribution::Default, &dev);
    let wy = Tensor::<CpuTrain, 3>::random([3, 7, 40], Distribution::Default, &dev);
    let grads_of = |fused: bool| {
        let x = Tensor::<CpuTrain, 3>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<CpuTrain, 1>::from_inner(w0.clone()).require_grad();
        let b = Tensor::<CpuTrain, 1>::from_inner(b0.clone()).require_grad();
        let y = if fused {
            layer_norm(x.clone(), w.clone(), b.clone(), 1e-12)
        } else {
            let mean = x.clone().mean_dim(2);
            let xc = x.clone() - mean;
            let var = (xc.clone() * xc.clone()).mean_dim(2);
            xc / (var + 1e-12).sqrt() * w.clone().reshape([1, 1, 40])
                + b.clone().reshape([1, 1, 40])
        };
        let g = (y * wy.clone()).sum().backward();
        (
            x.grad(&g).unwrap(),
            w.grad(&g).unwrap(),
            b.grad(&g).unwrap(),
        )
    };
    let (fx, fw, fb) = grads_of(true);
    let (rx, rw, rb) = grads_of(false);
    assert!(max_diff(fx, rx) < 1e-5);
    assert!(max_diff(fw, rw) < 1e-4);
    assert!(max_diff(fb, rb) < 1e-5);

    let h0 = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
    let wm = Tensor::<CpuTrain, 3>::random([2, 5, 12], Distribution::Default, &dev);
    let h = Tensor::<CpuTrain, 4>::from_inner(h0).require_grad();
    let g = (merge_heads(h.clone()) * wm.clone()).sum().backward();
    let want = wm.inner().reshape([2, 5, 3, 4]).swap_dims(1, 2);
    assert_eq!(max_diff(h.grad(&g).unwrap(), want), 0.0);
}

/// The reference versions are the only kernels GPU backends run (forward and backward):
/// each against the CPU kernel on the same inputs, the forward pass and, where the kernel
/// has one, the backward pass.
#[test]
fn composed_fallbacks_match_cpu_kernels() {
    let dev = Default::default();

    // GELU: values, and the gradient from the saved input
    let x = Tensor::<Cpu, 3>::random([3, 11, 40], Distribution::Normal(0.0, 3.0), &dev);
    let g = Tensor::<Cpu, 3>::random([3, 11, 40], Distribution::Default, &dev);
    let scale = x.clone().abs().clamp_min(1.0);
    let y_ref = t::<3>(reference::gelu_exact::<Cpu>(p(x.clone())));
    let y = t::<3>(Cpu::gelu_exact(p(x.clone())));
    assert!(((y - y_ref).abs() / scale).max().into_scalar() < 5e-7);
    let d_ref = t::<3>(reference::gelu_exact_backward::<Cpu>(
        p(x.clone()),
        p(g.clone()),
    ));
    let d = t::<3>(Cpu::gelu_exact_backward(p(x), p(g)));
    assert!(max_diff(d, d_ref) < 2e-6);

    // softmax with a padding bias: values, and the gradient from the saved output
    let scores = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Normal(0.0, 4.0), &dev);
    let mut bias = vec![0.0f32; 14];
    bias[2] = f32::NEG_INFINITY;
    bias[13] = -10000.0;
    let bias = Tensor::<Cpu, 4>::from_data(TensorData::new(bias, [2, 1, 1, 7]), &dev);
    let y_ref = t::<4>(reference::softmax_with_bias::<Cpu>(
        p(scores.clone()),
        p(bias.clone()),
    ));
    let y = t::<4>(Cpu::softmax_with_bias(p(scores), p(bias)));
    assert!(max_diff(y.clone(), y_ref) < 1e-6);
    let g = Tensor::<Cpu, 4>::random([2, 3, 5, 7], Distribution::Default, &dev);
    let d_ref = t::<4>(reference::softmax_backward::<Cpu>(
        p(y.clone()),
        p(g.clone()),
    ));
    let d = t::<4>(Cpu::softmax_backward(p(y), p(g)));
    assert!(max_diff(d, d_ref) < 1e-6);

    // layer norm: values, and the gradients for the input, the weight and the bias
    let x = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Normal(1.0, 2.0), &dev);
    let w = Tensor::<Cpu, 1>::random([40], Distribution::Normal(1.0, 0.5), &dev);
    let b = Tensor::<Cpu, 1>::random([40], Distribution::Default, &dev);
    let dy = Tensor::<Cpu, 3>::random([3, 7, 40], Distribution::Default, &dev);
    let y_ref = t::<3>(reference::layer_norm::<Cpu>(
        p(x.clone()),
        p(w.clone()),
        p(b.clone()),
        1e-12,
    ));
    let y = t::<3>(Cpu::layer_norm_fused(
        p(x.clone()),
        p(w.clone()),
        p(b),
        1e-12,
    ));
    assert!(max_diff(y, y_ref) < 1e-5);
    let (rx, rw, rb) =
        reference::layer_norm_backward::<Cpu>(p(x.clone()), p(w.clone()), p(dy.clone()), 1e-12);
    let (fx, fw, fb) = Cpu::layer_norm_fused_backward(p(x), p(w), p(dy), 1e-12);
    assert!(max_diff(t::<3>(fx), t::<3>(rx)) < 1e-5);
    assert!(max_diff(t::<1>(fw), t::<1>(rw)) < 1e-4);
    assert!(max_diff(t::<1>(fb), t::<1>(rb)) < 1e-5);

    // Adam(W): the new parameter and moments
    for decoupled in [false, true] {
        let h = AdamStep {
            lr: 1e-3,
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.01,
            decoupled,
            step: 3,
        };
        let r = |i: u64| {
            Tensor::<Cpu, 1>::random([1000], Distribution::Normal(0.0, 1.0 + i as f64), &dev)
        };
        let (w, g, m) = (r(0), r(1), r(2));
        let v = r(3).abs();
        let (rp, rm, rv) =
            reference::adam_step::<Cpu>(p(w.clone()), p(g.clone()), p(m.clone()), p(v.clone()), &h);
        let (fp, fm, fv) = Cpu::adam_step(p(w), p(g), p(m), p(v), &h);
        assert!(
            max_diff(t::<1>(fp), t::<1>(rp)) < 1e-6,
            "adam decoupled {decoupled}"
        );
        assert!(max_diff(t::<1>(fm), t::<1>(rm)) < 1e-6);
        assert!(max_diff(t::<1>(fv), t::<1>(rv)) < 1e-5);
    }

    // dropout: the same mask (its backward pass is the same call on the gradient)
    let x = Tensor::<Cpu, 3>::random([4, 9, 33], Distribution::Default, &dev);
    let d_ref = t::<3>(reference::dropout::<Cpu>(p(x.clone()), 0.1, 77));
    let d = t::<3>(Cpu::dropout(p(x), 0.1, 77));
    assert_eq!(max_diff(d, d_ref), 0.0, "dropout masks differ");

    // merge heads: values, and the gradient through the autodiff backend against the
    // reference backward
    let heads = Tensor::<Cpu, 4>::random([2, 3, 5, 4], Distribution::Default, &dev);
    let m_ref = t::<3>(reference::merge_heads::<Cpu>(p(heads.clone())));
    let m = t::<3>(Cpu::merge_heads(p(heads.clone())));
    assert_eq!(max_diff(m, m_ref), 0.0);
    let g = Tensor::<Cpu, 3>::random([2, 5, 12], Distribution::Default, &dev);
    let h = Tensor::<CpuTrain, 4>::from_inner(heads).require_grad();
    let grads = (merge_heads(h.clone()) * Tensor::from_inner(g.clone()))
        .sum()
        .backward();
    let want = t::<4>(reference::split_heads::<Cpu>(p(g), 3));
    assert_eq!(max_diff(h.grad(&grads).unwrap(), want), 0.0);
}

/// Tensors the CPU Adam kernel does not handle (mismatched shapes) go to the reference
/// version instead of failing.
#[test]
fn adam_with_mismatched_shapes_falls_back() {
    let dev = Default::default();
    let h = AdamStep {
        lr: 1e-2,
        beta1: 0.9,
        beta2: 0.999,
        eps: 1e-8,
        weight_decay: 0.0,
        decoupled: true,
        step: 1,
    };
    let param = Tensor::<Cpu, 2>::ones([2, 3], &dev);
    let grad = Tensor::<Cpu, 2>::ones([1, 3], &dev); // broadcast by the composed ops
    let zeros = Tensor::<Cpu, 2>::zeros([2, 3], &dev);
    let (p1, m1, _) = adam_step(param, grad, zeros.clone(), zeros, &h);
    assert_eq!(p1.dims(), [2, 3]);
    let want = 1.0 - 1e-2;
    let got = p1.into_data().to_vec::<f32>().unwrap();
    assert!(got.iter().all(|x| (x - want).abs() < 1e-5), "{got:?}");
    assert!(
        m1.into_data()
            .to_vec::<f32>()
            .unwrap()
            .iter()
            .all(|x| (x - 0.1).abs() < 1e-6)
    );
}

/// The CPU matmul and linear against burn's matmul and linear module op (and the reference,
/// what GPUs run): values on strided views (transposed, head-split), and the gradients of
/// every operand, also with the weights frozen (only the input's gradient is asked for).
#[test]
fn matmul_and_linear_match_burn_values_and_gradients() {
    use burn::module::Param;
    use burn::nn::Linear;
    let dev = Default::default();
    // [b, len, h] → heads view [b, nh, len, hd] (strided), times its own transpose
    let x = Tensor::<Cpu, 3>::random([3, 9, 16], Distribution::Normal(0.0, 1.0), &dev);
    let q = x.clone().reshape([3, 9, 4, 4]).swap_dims(1, 2);
    let k = (x.clone() * 0.5).reshape([3, 9, 4, 4]).swap_dims(1, 2);
    let want = q.clone().matmul(k.clone().swap_dims(2, 3));
    let fast = matmul(q.clone(), k.clone().swap_dims(2, 3));
    assert!(max_diff(fast, want.clone()) < 1e-6);
    let reference = t::<4>(reference::matmul::<Cpu>(p(q), p(k.swap_dims(2, 3))));
    assert!(max_diff(reference, want) < 1e-6);
    // a matrix shape large enough to be split over the threads, operand transposed
    let a = Tensor::<Cpu, 2>::random([300, 200], Distribution::Default, &dev);
    let b = Tensor::<Cpu, 2>::random([250, 200], Distribution::Default, &dev);
    let want = a.clone().matmul(b.clone().transpose());
    assert!(max_diff(matmul(a, b.transpose()), want) < 1e-4);

    let w0 = Tensor::<Cpu, 2>::random([16, 24], Distribution::Normal(0.0, 0.5), &dev);
    let b0 = Tensor::<Cpu, 1>::random([24], Distribution::Default, &dev);
    let wy = Tensor::<CpuTrain, 3>::random([3, 9, 24], Distribution::Default, &dev);
    let grads_of = |fast: bool, frozen: bool| {
        let input = Tensor::<CpuTrain, 3>::from_inner(x.clone()).require_grad();
        let (mut w, mut b) = (
            Tensor::<CpuTrain, 2>::from_inner(w0.clone()),
            Tensor::<CpuTrain, 1>::from_inner(b0.clone()),
        );
        if !frozen {
            (w, b) = (w.require_grad(), b.require_grad());
        }
        let layer = Linear {
            weight: Param::from_tensor(w).set_require_grad(!frozen),
            bias: Some(Param::from_tensor(b).set_require_grad(!frozen)),
        };
        let y = if fast {
            linear(input.clone(), &layer)
        } else {
            layer.forward(input.clone())
        };
        let g = (y.clone() * wy.clone()).sum().backward();
        let (wg, bg) = (
            layer.weight.val().grad(&g),
            layer.bias.unwrap().val().grad(&g),
        );
        (y.inner(), input.grad(&g).unwrap(), wg, bg)
    };
    for frozen in [false, true] {
        let (fy, fx, fw, fb) = grads_of(true, frozen);
        let (ry, rx, rw, rb) = grads_of(false, frozen);
        assert!(max_diff(fy, ry) < 1e-6, "linear values");
        assert!(max_diff(fx, rx) < 1e-5, "input gradient (frozen {frozen})");
        assert_eq!(fw.is_some(), !frozen);
        if let (Some(fw), Some(rw), Some(fb), Some(rb)) = (fw, rw, fb, rb) {
            assert!(max_diff(fw, rw) < 1e-5, "weight gradient");
            assert!(max_diff(fb, rb) < 1e-5, "bias gradient");
        }
    }
    // gradients of both matmul operands (attention's q·kᵀ and p·v)
    let grads_of = |fast: bool| {
        let a = Tensor::<CpuTrain, 4>::from_inner(x.clone().reshape([3, 9, 4, 4]).swap_dims(1, 2))
            .require_grad();
        let b = Tensor::<CpuTrain, 4>::from_inner(x.clone().reshape([3, 4, 4, 9])).require_grad();
        let y = if fast {
            matmul(a.clone(), b.clone())
        } else {
            a.clone().matmul(b.clone())
        };
        let g = (y.clone() * y.clone()).sum().backward();
        (a.grad(&g).unwrap(), b.grad(&g).unwrap())
    };
    let ((fa, fb), (ra, rb)) = (grads_of(true), grads_of(false));
    assert!(max_diff(fa, ra) < 1e-4);
    assert!(max_diff(fb, rb) < 1e-4);
}

/// The tied-decoder linear layer (`x · wᵀ + b`, `w` `[out, in]`) against burn's composed ops,
/// values and the three gradients, with the weight's gradient in the weight's own layout; and
/// the reference version (what GPUs run) on the same inputs.
#[test]
fn transposed_weight_linear_matches_burn_values_and_gradients() {
    let dev = Default::default();
    let x0 = Tensor::<Cpu, 2>::random([70, 48], Distribution::Normal(0.0, 1.0), &dev);
    // the vocabulary-like output is wide enough for the products to be split over the threads
    let w0 = Tensor::<Cpu, 2>::random([300, 48], Distribution::Normal(0.0, 0.5), &dev);
    let b0 = Tensor::<Cpu, 1>::random([300], Distribution::Default, &dev);
    let wy = Tensor::<CpuTrain, 2>::random([70, 300], Distribution::Default, &dev);
    let grads_of = |fast: bool| {
        let x = Tensor::<CpuTrain, 2>::from_inner(x0.clone()).require_grad();
        let w = Tensor::<CpuTrain, 2>::from_inner(w0.clone()).require_grad();
        let b = Tensor::<CpuTrain, 1>::from_inner(b0.clone()).require_grad();
        let y = if fast {
            linear_t(x.clone(), w.clone(), b.clone())
        } else {
            x.clone().matmul(w.clone().transpose()) + b.clone().unsqueeze_dim(0)
        };
        let g = (y.clone() * wy.clone()).sum().backward();
        let wg = w.grad(&g).unwrap();
        (y.inner(), x.grad(&g).unwrap(), wg, b.grad(&g).unwrap())
    };
    let (fy, fx, fw, fb) = grads_of(true);
    let (ry, rx, rw, rb) = grads_of(false);
    assert!(max_diff(fy.clone(), ry) < 1e-5, "values");
    assert!(max_diff(fx, rx) < 1e-4, "input gradient");
    assert!(max_diff(fb, rb) < 1e-4, "bias gradient");
    assert!(max_diff(fw.clone(), rw) < 1e-4, "weight gradient");
    let grad = fw.into_primitive().tensor();
    assert!(
        grad.layout().is_contiguous(),
        "weight gradient in the weight's layout"
    );
    let reference = t::<2>(reference::linear::<Cpu>(p(x0), p(w0.transpose()), p(b0)));
    assert!(max_diff(reference, fy) < 1e-5, "reference");
}

/// The fused cross-entropy against burn's `CrossEntropyLoss` and against the reference (what
/// GPUs run): the loss and the logits' gradient, on a vocabulary-sized row split over the
/// threads and on a two-class head; a target out of range goes to the reference.
#[test]
fn cross_entropy_matches_burn_loss_and_gradient() {
    use burn::nn::loss::CrossEntropyLossConfig;
    let dev = Default::default();
    for (rows, classes) in [(37usize, 21128usize), (32, 2), (1, 5)] {
        let x0 = Tensor::<Cpu, 2>::random([rows, classes], Distribution::Normal(0.0, 4.0), &dev);
        let ids: Vec<i32> = (0..rows).map(|i| ((i * 7919) % classes) as i32).collect();
        let targets = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(ids.clone(), [rows]), &dev);
        let run = |fused: bool| {
            let x = Tensor::<CpuTrain, 2>::from_inner(x0.clone()).require_grad();
            let tg = Tensor::<CpuTrain, 1, Int>::from_inner(targets.clone());
            let loss = if fused {
                cross_entropy(x.clone(), tg)
            } else {
                CrossEntropyLossConfig::new()
                    .init(&dev)
                    .forward(x.clone(), tg)
            };
            // a loss gradient other than 1, so its scale is checked too
            let g = (loss.clone() * 3.0).backward();
            (loss.inner(), x.grad(&g).unwrap())
        };
        let ((fl, fg), (bl, bg)) = (run(true), run(false));
        let (fl, bl): (f32, f32) = (fl.into_scalar(), bl.into_scalar());
        assert!(
            (fl - bl).abs() < 1e-5 * bl.abs().max(1.0),
            "{rows}x{classes}: loss {fl} vs {bl}"
        );
        let d = max_diff(fg.clone(), bg);
        // per-element gradients are at most 3/rows; f32 rounding of two different op orders
        assert!(d < 5e-7, "{rows}x{classes}: gradient differs by {d}");
        // training keeps each row's exponentials (`cross_entropy_saving`): the same loss and
        // the same gradient bits as the kernel that recomputes the softmax from the logits
        let three = || p(Tensor::<Cpu, 1>::from_floats([3.0], &dev));
        let plain = t::<2>(<Cpu as Kernels>::cross_entropy_backward(
            p(x0.clone()),
            targets.clone().into_primitive(),
            three(),
        ));
        assert_eq!(
            max_diff(fg.clone(), plain),
            0.0,
            "{rows}x{classes}: saved exponentials"
        );
        let (loss, saved) =
            <Cpu as Kernels>::cross_entropy_saving(p(x0.clone()), targets.clone().into_primitive());
        assert_eq!(t::<1>(loss).into_scalar(), fl);
        assert!(matches!(saved, CrossEntropySaved::Exps(..)));
        // what other backends would do with kept exponentials: the reference on their log
        if let CrossEntropySaved::Exps(e, _) = saved {
            let via_log = t::<2>(reference::cross_entropy_backward::<Cpu>(
                <Cpu as burn::tensor::ops::FloatTensorOps<Cpu>>::float_log(e),
                targets.clone().into_primitive(),
                three(),
            ));
            assert!(
                max_diff(fg.clone(), via_log) < 1e-5,
                "{rows}x{classes}: via log"
            );
        }
        // the reference, forward and backward
        let r = t::<1>(reference::cross_entropy::<Cpu>(
            p(x0.clone()),
            targets.clone().into_primitive(),
        ));
        let r: f32 = r.into_scalar();
        assert!((r - bl).abs() < 1e-5 * bl.abs().max(1.0));
        let rg = t::<2>(reference::cross_entropy_backward::<Cpu>(
            p(x0.clone()),
            targets.clone().into_primitive(),
            p(Tensor::<Cpu, 1>::from_floats([3.0], &dev)),
        ));
        let d = max_diff(fg, rg);
        // burn-flex's softmax sums a row sequentially in f32 (relative error ~1e-5 at 21,128)
        assert!(
            d < 1e-5,
            "{rows}x{classes}: reference gradient differs by {d}"
        );
    }
    // out of range: the CPU kernel declines and the reference (burn's gather) is used
    let x = Tensor::<Cpu, 2>::zeros([2, 3], &dev);
    let bad = Tensor::<Cpu, 1, Int>::from_data(TensorData::new(vec![0i32, 3], [2]), &dev);
    assert!(super::cross_entropy::forward(p(x), bad.into_primitive()).is_none());
}

/// The head split is a view on every backend; its gradient goes through the merge kernel,
/// also when that gradient arrives transposed (the keys', through `kᵀ`).
#[test]
fn split_heads_gradient_is_the_merge() {
    let dev = Default::default();
    let x0 = Tensor::<Cpu, 3>::random([2, 5, 12], Distribution::Default, &dev);
    let w = Tensor::<Cpu, 4>::random([2, 3, 4, 5], Distribution::Default, &dev);
    let grad_of = |fused: bool| {
        let x = Tensor::<CpuTrain, 3>::from_inner(x0.clone()).require_grad();
        let heads = if fused {
            split_heads(x.clone(), 3)
        } else {
            x.clone().reshape([2, 5, 3, 4]).swap_dims(1, 2)
        };
        assert_eq!(heads.dims(), [2, 3, 5, 4]);
        // transposed, as the keys are used: the gradient reaching the split is strided
        let y = heads.swap_dims(2, 3) * Tensor::from_inner(w.clone());
        let g = y.sum().backward();
        x.grad(&g).unwrap()
    };
    assert_eq!(max_diff(grad_of(true), grad_of(false)), 0.0);
    let v = t::<4>(Cpu::split_heads(p(x0.clone()), 3));
    assert_eq!(max_diff(v, x0.reshape([2, 5, 3, 4]).swap_dims(1, 2)), 0.0);
}
