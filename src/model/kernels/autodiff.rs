//! The kernels on burn's autodiff backend: each forward kernel of the inner backend, recorded
//! with its exact gradient (a backward kernel, or for dropout the same mask again).

use burn::backend::Autodiff;
use burn::backend::autodiff::checkpoint::base::Checkpointer;
use burn::backend::autodiff::checkpoint::strategy::CheckpointStrategy;
use burn::backend::autodiff::grads::Gradients;
use burn::backend::autodiff::ops::{Backward, Ops, OpsKind, unary};
use burn::tensor::TensorMetadata;
use burn::tensor::backend::Backend;
use burn::tensor::ops::FloatTensor;

use super::{Kernels, reference};

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
            reference::merge_heads_backward::<B>(grad, dims)
        });
    }
}

impl<B: Kernels, C: CheckpointStrategy> Kernels for Autodiff<B, C> {
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
}
