//! The kernels on burn's autodiff backend: each forward kernel of the inner backend, recorded
//! with its exact gradient (a backward kernel, or for dropout the same mask again).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::TensorMetadata;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensorOps;
use burn::tensor::ops::{FloatTensor, IntTensor};

use super::{CrossEntropySaved, Kernels, reference};

/// A one-input op whose gradient is `backward(saved, grad)` from one saved tensor (GELU saves
/// its input, softmax its output).
#[derive(Debug)]
struct SavedTensorBackward<B: Backend> {
    backward: fn(FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
}

impl<B: Kernels> Backward<B, 1> for SavedTensorBackward<B> {
    type State = FloatTensor<B>;

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let saved = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            (self.backward)(saved, grad)
        });
    }
}

#[derive(Debug)]
struct LayerNormBackward;

impl<B: Kernels> Backward<B, 3> for LayerNormBackward {
    /// Input, weight, epsilon.
    type State = (FloatTensor<B>, FloatTensor<B>, f64);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, weight, eps) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let [node_x, node_w, node_b] = ops.parents;
        let (dx, dw, db) = B::layer_norm_fused_backward(x, weight, dy, eps);
        if let Some(n) = node_x {
            grads.register::<B>(n.id, dx);
        }
        if let Some(n) = node_w {
            grads.register::<B>(n.id, dw);
        }
        if let Some(n) = node_b {
            grads.register::<B>(n.id, db);
        }
    }
}

#[derive(Debug)]
struct DropoutBackward;

impl<B: Kernels> Backward<B, 1> for DropoutBackward {
    /// Probability and seed: the mask is regenerated, not stored.
    type State = (f64, u64);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (prob, seed) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::dropout(grad, prob, seed)
        });
    }
}

#[derive(Debug)]
struct MergeHeadsBackward;

impl<B: Kernels> Backward<B, 1> for MergeHeadsBackward {
    /// `[batch, heads, len, head_dim]` of the input.
    type State = [usize; 4];

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let dims = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            reference::split_heads::<B>(grad, dims[1])
        });
    }
}

/// The gradient of a head split is the heads merged back ([`Kernels::merge_heads`]).
#[derive(Debug)]
struct SplitHeadsBackward;

impl<B: Kernels> Backward<B, 1> for SplitHeadsBackward {
    type State = ();

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        unary::<B, _>(ops.parents, ops.node, grads, B::merge_heads);
    }
}

/// Cross-entropy: the logits' gradient from the saved logits and targets.
#[derive(Debug)]
struct CrossEntropyBackward;

impl<B: Kernels> Backward<B, 1> for CrossEntropyBackward {
    /// What the forward kept (see [`Kernels::cross_entropy_saving`]), targets.
    type State = (CrossEntropySaved<B>, IntTensor<B>);

    fn backward(self, ops: Ops<Self::State, 1>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (saved, targets) = ops.state;
        unary::<B, _>(ops.parents, ops.node, grads, |grad| {
            B::cross_entropy_backward_saved(saved, targets, grad)
        });
    }
}

/// `a · b`: `da = g · bᵀ`, `db = aᵀ · g`, each saved operand kept only when the other one's
/// gradient needs it.
#[derive(Debug)]
struct MatmulBackward;

impl<B: Kernels> Backward<B, 2> for MatmulBackward {
    /// `a` (needed for `db`), `b` (needed for `da`).
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 2>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (a, b) = ops.state;
        let g = grads.consume::<B>(&ops.node);
        let r = g.shape().num_dims();
        let t = |x: FloatTensor<B>| B::float_swap_dims(x, r - 2, r - 1);
        let [node_a, node_b] = ops.parents;
        if let (Some(n), Some(b)) = (node_a, b) {
            grads.register::<B>(n.id, B::matmul(g.clone(), t(b)));
        }
        if let (Some(n), Some(a)) = (node_b, a) {
            grads.register::<B>(n.id, B::matmul(t(a), g));
        }
    }
}

/// A linear layer on rows: `x · w + bias` with `w` `[in, out]` (`transposed: false`:
/// `dx = dy · wᵀ`, `dw = xᵀ · dy`), or `x · wᵀ + bias` with `w` `[out, in]` (`transposed:
/// true`, the tied MLM decoder: `dx = dy · w`, `dw = dyᵀ · x`, in the weight's own layout);
/// `dbias` = column sums of `dy` either way.
#[derive(Debug)]
struct LinearBackward {
    transposed: bool,
}

impl<B: Kernels> Backward<B, 3> for LinearBackward {
    /// `x` (needed for `dw`), `w` (needed for `dx`).
    type State = (Option<FloatTensor<B>>, Option<FloatTensor<B>>);

    fn backward(self, ops: Ops<Self::State, 3>, grads: &mut Gradients, _: &mut Checkpointer) {
        let (x, w) = ops.state;
        let dy = grads.consume::<B>(&ops.node);
        let [node_x, node_w, node_b] = ops.parents;
        let t = |m: FloatTensor<B>| B::float_swap_dims(m, 0, 1);
        if let (Some(n), Some(w)) = (node_x, w) {
            let w = if self.transposed { w } else { t(w) };
            grads.register::<B>(n.id, B::matmul(dy.clone(), w));
        }
        if let (Some(n), Some(x)) = (node_w, x) {
            let dw = if self.transposed {
                B::matmul(t(dy.clone()), x)
            } else {
                B::matmul(t(x), dy.clone())
            };
            grads.register::<B>(n.id, dw);
        }
        if let Some(n) = node_b {
            let out = dy.shape()[1];
            let db = B::float_reshape(B::float_sum_dim(dy, 0), [out].into());
            grads.register::<B>(n.id, db);
        }
    }
}

/// A linear layer under autodiff, for either weight layout: `forward` on the inner backend,
/// saving `x` when the weight needs a gradient and the weight when `x` does.
fn tracked_linear<B: Kernels, C: CheckpointStrategy>(
    op: LinearBackward,
    forward: fn(FloatTensor<B>, FloatTensor<B>, FloatTensor<B>) -> FloatTensor<B>,
    x: FloatTensor<Autodiff<B, C>>,
    weight: FloatTensor<Autodiff<B, C>>,
    bias: FloatTensor<Autodiff<B, C>>,
) -> FloatTensor<Autodiff<B, C>> {
    let (x_tracked, w_tracked) = (x.is_tracked(), weight.is_tracked());
    let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
    match op.prepare::<C>(nodes).compute_bound().stateful() {
        OpsKind::Tracked(prep) => {
            let out = forward(
                x.primitive.clone(),
                weight.primitive.clone(),
                bias.primitive,
            );
            let saved_x = w_tracked.then_some(x.primitive);
            let saved_w = x_tracked.then_some(weight.primitive);
            prep.finish((saved_x, saved_w), out)
        }
        OpsKind::UnTracked(prep) => {
            prep.finish(forward(x.primitive, weight.primitive, bias.primitive))
        }
    }
}

impl<B: Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
    const SEQ_LEN_MULTIPLE: usize = B::SEQ_LEN_MULTIPLE;

    fn gelu_exact(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let backward = SavedTensorBackward::<B> {
            backward: B::gelu_exact_backward,
        };
        match backward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::gelu_exact(x.primitive.clone());
                prep.finish(x.primitive, out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::gelu_exact(x.primitive)),
        }
    }

    /// The scores are tracked; the bias (the padding mask) is a constant.
    fn softmax_with_bias(scores: FloatTensor<Self>, bias: FloatTensor<Self>) -> FloatTensor<Self> {
        let backward = SavedTensorBackward::<B> {
            backward: B::softmax_backward,
        };
        match backward
            .prepare::<C>([scores.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::softmax_with_bias(scores.primitive, bias.primitive);
                prep.finish(out.clone(), out)
            }
            OpsKind::UnTracked(prep) => {
                prep.finish(B::softmax_with_bias(scores.primitive, bias.primitive))
            }
        }
    }

    fn layer_norm_fused(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
        eps: f64,
    ) -> FloatTensor<Self> {
        let nodes = [x.node.clone(), weight.node.clone(), bias.node.clone()];
        match LayerNormBackward
            .prepare::<C>(nodes)
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::layer_norm_fused(
                    x.primitive.clone(),
                    weight.primitive.clone(),
                    bias.primitive,
                    eps,
                );
                prep.finish((x.primitive, weight.primitive, eps), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::layer_norm_fused(
                x.primitive,
                weight.primitive,
                bias.primitive,
                eps,
            )),
        }
    }

    fn dropout(x: FloatTensor<Self>, prob: f64, seed: u64) -> FloatTensor<Self> {
        match DropoutBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                prep.finish((prob, seed), B::dropout(x.primitive, prob, seed))
            }
            OpsKind::UnTracked(prep) => prep.finish(B::dropout(x.primitive, prob, seed)),
        }
    }

    fn merge_heads(x: FloatTensor<Self>) -> FloatTensor<Self> {
        let s = x.primitive.shape();
        let dims = [s[0], s[1], s[2], s[3]];
        match MergeHeadsBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish(dims, B::merge_heads(x.primitive)),
            OpsKind::UnTracked(prep) => prep.finish(B::merge_heads(x.primitive)),
        }
    }

    fn split_heads(x: FloatTensor<Self>, heads: usize) -> FloatTensor<Self> {
        match SplitHeadsBackward
            .prepare::<C>([x.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => prep.finish((), B::split_heads(x.primitive, heads)),
            OpsKind::UnTracked(prep) => prep.finish(B::split_heads(x.primitive, heads)),
        }
    }

    /// The targets are constants.
    fn cross_entropy(logits: FloatTensor<Self>, targets: IntTensor<Self>) -> FloatTensor<Self> {
        match CrossEntropyBackward
            .prepare::<C>([logits.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                // the logits move in: nothing else holds them, so the CPU reuses their buffer
                let (loss, saved) = B::cross_entropy_saving(logits.primitive, targets.clone());
                prep.finish((saved, targets), loss)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::cross_entropy(logits.primitive, targets)),
        }
    }

    /// Products with broadcast batch dimensions go to burn's autodiff matmul, which sums the
    /// broadcast gradient; the model's products have equal batch dimensions.
    fn matmul(lhs: FloatTensor<Self>, rhs: FloatTensor<Self>) -> FloatTensor<Self> {
        let (ls, rs) = (lhs.primitive.shape(), rhs.primitive.shape());
        let r = ls.num_dims();
        if rs.num_dims() != r || (0..r.saturating_sub(2)).any(|d| ls[d] != rs[d]) {
            return <Self as FloatTensorOps<Self>>::float_matmul(lhs, rhs);
        }
        let (a_tracked, b_tracked) = (lhs.is_tracked(), rhs.is_tracked());
        match MatmulBackward
            .prepare::<C>([lhs.node.clone(), rhs.node.clone()])
            .compute_bound()
            .stateful()
        {
            OpsKind::Tracked(prep) => {
                let out = B::matmul(lhs.primitive.clone(), rhs.primitive.clone());
                let a = b_tracked.then_some(lhs.primitive);
                let b = a_tracked.then_some(rhs.primitive);
                prep.finish((a, b), out)
            }
            OpsKind::UnTracked(prep) => prep.finish(B::matmul(lhs.primitive, rhs.primitive)),
        }
    }

    fn linear_rows(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked_linear::<B, C>(
            LinearBackward { transposed: false },
            B::linear_rows,
            x,
            weight,
            bias,
        )
    }

    fn linear_rows_t(
        x: FloatTensor<Self>,
        weight: FloatTensor<Self>,
        bias: FloatTensor<Self>,
    ) -> FloatTensor<Self> {
        tracked_linear::<B, C>(
            LinearBackward { transposed: true },
            B::linear_rows_t,
            x,
            weight,
            bias,
        )
    }
}
