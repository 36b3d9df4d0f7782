//! Deep prompts (P-tuning v2, prefix tuning): trainable keys and values prepended to every
//! self-attention layer of a frozen BERT.
//!
//! Layout, as PEFT's `PrefixEncoder`: one matrix `[prefix_len, layers * 2 * hidden]` whose row
//! `p` holds, for each layer `i`, the key (block `2i`) and the value (block `2i + 1`) of virtual
//! token `p`, each `hidden` wide and split into heads like BERT's own keys. With
//! reparameterisation (`Reparam::Mlp`, PEFT's `prefix_projection`) the matrix is produced by
//! `Embedding(P, H) → Linear(H, R) → tanh → Linear(R, L·2·H)`; an adapter stores the product.
//! Tensor names are PEFT's (`embedding.weight`, `transform.0.weight`, `transform.2.bias`, …).

use std::collections::BTreeMap;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::Linear;
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::tanh;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::rngs::StdRng;
use rand_distr::{Distribution, StandardNormal};

use super::io::host::{RawTensor, to_host, transpose};
use super::io::weights::new_param;

/// How the prefixes are parameterised while training.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Reparam {
    /// The prefix matrix itself is the parameter.
    #[default]
    None,
    /// An MLP produces the prefix matrix from `P` embeddings (dropped at export).
    Mlp,
}

impl FromStr for Reparam {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "none" => Ok(Self::None),
            "mlp" => Ok(Self::Mlp),
            _ => Err(format!(
                "unknown reparameterisation \"{s}\" (expected none or mlp)"
            )),
        }
    }
}

/// Shape of the backbone the prefixes are for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrefixShape {
    /// Number of encoder layers `L`, each with its own key and value prefix.
    pub num_layers: usize,
    /// Attention heads per layer; `hidden` is split into this many heads.
    pub num_heads: usize,
    /// Hidden size `H` of the backbone.
    pub hidden: usize,
}

impl PrefixShape {
    /// Width of one prefix row: a key and a value per layer.
    pub fn width(&self) -> usize {
        self.num_layers * 2 * self.hidden
    }
}

/// PEFT's tensor names for the deep prompts, spelled once: [`DeepPrompt::init`],
/// [`DeepPrompt::from_tensors`] and [`DeepPrompt::named_tensors`] all build them here.
pub mod keys {
    /// Namespace of these tensors in a run's trainable-weights file and of their burn
    /// parameter ids (`deep.<PEFT name>`).
    pub const NAMESPACE: &str = "deep";
    /// The prefix embeddings: `[P, layers·2·hidden]`, or `[P, hidden]` when reparameterised.
    pub const EMBEDDING: &str = "embedding.weight";
    /// The two Linears of the reparameterisation MLP, as `nn.Sequential` indexes them.
    pub const TRANSFORM_LINEARS: [&str; 2] = ["0", "2"];
    /// Linear `i` of the reparameterisation MLP, `part` = `weight`|`bias`.
    pub fn transform(i: &str, part: &str) -> String {
        format!("transform.{i}.{part}")
    }
    /// The burn parameter id of the tensor named `key` (see [`NAMESPACE`]).
    pub fn param(key: &str) -> String {
        format!("{NAMESPACE}.{key}")
    }
}

/// The reparameterisation MLP `Linear(H, R) → tanh → Linear(R, L·2·H)` (PEFT's `transform`).
#[derive(Module, Debug)]
pub struct PrefixMlp<B: Backend> {
    /// PEFT key `transform.0`, `H → R`.
    pub linear1: Linear<B>,
    /// PEFT key `transform.2`, `R → L·2·H`.
    pub linear2: Linear<B>,
}

/// Trainable deep prompts: `P` virtual tokens' keys and values for every layer, optionally
/// produced by a [`PrefixMlp`] (see the module docs for the layout).
#[derive(Module, Debug)]
pub struct DeepPrompt<B: Backend> {
    /// `[P, L·2·H]` without reparameterisation, `[P, H]` with.
    pub embedding: Param<Tensor<B, 2>>,
    /// The reparameterisation MLP ([`Reparam::Mlp`]); `None` for [`Reparam::None`].
    pub transform: Option<PrefixMlp<B>>,
    /// Number of encoder layers `L` the prefix is laid out for.
    pub num_layers: usize,
    /// Attention heads per layer.
    pub num_heads: usize,
    /// Hidden size `H` of the backbone.
    pub hidden: usize,
}

/// Per-layer prefix keys and values of one batch, `[batch, heads, P, head_dim]` each, the
/// additive bias of the prefix slots `[batch, 1, 1, P]` (0, or -inf for slots a row does not
/// use: rows of a mixed batch may have prefixes of different lengths, or none), and each
/// row's number of prefix tokens, where its token positions start (transformers numbers
/// positions after `past_key_values`, and PEFT's prefix tuning runs that way).
#[derive(Debug, Clone)]
pub struct Prefixes<B: Backend> {
    /// One (key, value) pair per encoder layer, `[batch, heads, P, head_dim]` each.
    pub layers: Vec<(Tensor<B, 4>, Tensor<B, 4>)>,
    /// Additive attention bias of the prefix slots, `[batch, 1, 1, P]`: 0 or -inf.
    pub bias: Tensor<B, 4>,
    /// Per row, the number of prefix slots it uses: its first token position.
    pub offsets: Vec<usize>,
}

impl<B: Backend> Prefixes<B> {
    /// From per-row prefix matrices `[batch, P, L·2·H]` and per-row used lengths (`None`: all
    /// `P` slots of every row are used).
    pub fn from_rows(rows: Tensor<B, 3>, used: Option<&[usize]>, shape: PrefixShape) -> Self {
        let [b, p, w] = rows.dims();
        debug_assert_eq!(w, shape.width());
        let (l, nh) = (shape.num_layers, shape.num_heads);
        let hd = shape.hidden / nh;
        let x = rows.reshape([b, p, 2 * l, nh, hd]);
        let part = |j: usize| {
            x.clone()
                .slice([0..b, 0..p, j..j + 1, 0..nh, 0..hd])
                .reshape([b, p, nh, hd])
                .swap_dims(1, 2)
        };
        let layers = (0..l).map(|i| (part(2 * i), part(2 * i + 1))).collect();
        let device = x.device();
        let bias = match used {
            None => Tensor::zeros([b, 1, 1, p], &device),
            Some(used) => {
                let data: Vec<f32> = used
                    .iter()
                    .flat_map(|&u| (0..p).map(move |j| if j < u { 0.0 } else { f32::NEG_INFINITY }))
                    .collect();
                Tensor::from_data(burn::tensor::TensorData::new(data, [b, 1, 1, p]), &device)
            }
        };
        let offsets = used.map_or_else(|| vec![p; b], <[usize]>::to_vec);
        Prefixes {
            layers,
            bias,
            offsets,
        }
    }

    /// Number of prefix slots `P` (the longest prefix in the batch).
    pub fn len(&self) -> usize {
        self.bias.dims()[3]
    }

    /// Whether there are no prefix slots.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl<B: Backend> DeepPrompt<B> {
    /// The backbone shape (layers, heads, hidden) these prompts are laid out for.
    pub fn shape(&self) -> PrefixShape {
        PrefixShape {
            num_layers: self.num_layers,
            num_heads: self.num_heads,
            hidden: self.hidden,
        }
    }

    /// Number of virtual tokens `P` per layer.
    pub fn prefix_len(&self) -> usize {
        self.embedding.dims()[0]
    }

    /// [`Reparam::Mlp`] when the prefixes come from an MLP, else [`Reparam::None`].
    pub fn reparam(&self) -> Reparam {
        if self.transform.is_some() {
            Reparam::Mlp
        } else {
            Reparam::None
        }
    }

    /// The prefix matrix `[P, L·2·H]`.
    pub fn forward(&self) -> Tensor<B, 2> {
        let x = self.embedding.val();
        match &self.transform {
            Some(m) => m.linear2.forward(tanh(m.linear1.forward(x))),
            None => x,
        }
    }

    /// The same prefixes for every row of a batch of `batch` rows.
    pub fn prefixes(&self, batch: usize) -> Prefixes<B> {
        let m = self.forward();
        let [p, w] = m.dims();
        Prefixes::from_rows(
            m.reshape([1, p, w]).expand([batch, p, w]),
            None,
            self.shape(),
        )
    }

    /// Fresh parameters: embeddings N(0, 1) as PEFT's `nn.Embedding`; the MLP's linears
    /// uniform in ±1/sqrt(fan_in) as PyTorch's default.
    pub fn init(
        reparam: Reparam,
        prefix_len: usize,
        reparam_hidden: usize,
        shape: PrefixShape,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Self {
        use rand::Rng;
        let (h, w) = (shape.hidden, shape.width());
        let mut normal = |n: usize| -> Vec<f32> {
            (0..n)
                .map(|_| <StandardNormal as Distribution<f32>>::sample(&StandardNormal, rng))
                .collect()
        };
        let mut map = BTreeMap::new();
        let width = if reparam == Reparam::Mlp { h } else { w };
        map.insert(
            keys::EMBEDDING.to_string(),
            RawTensor::new(vec![prefix_len, width], normal(prefix_len * width)),
        );
        if reparam == Reparam::Mlp {
            let [l0, l2] = keys::TRANSFORM_LINEARS;
            for (i, d_in, d_out) in [(l0, h, reparam_hidden), (l2, reparam_hidden, w)] {
                let bound = 1.0 / (d_in as f32).sqrt();
                let mut u = |n: usize| -> Vec<f32> {
                    (0..n).map(|_| rng.random_range(-bound..bound)).collect()
                };
                map.insert(
                    keys::transform(i, "weight"),
                    RawTensor::new(vec![d_out, d_in], u(d_out * d_in)),
                );
                map.insert(
                    keys::transform(i, "bias"),
                    RawTensor::new(vec![d_out], u(d_out)),
                );
            }
        }
        Self::from_tensors(&map, shape, device)
            .expect("freshly built tensors have the right shapes")
    }

    /// Builds the module from PEFT-named tensors: `embedding.weight` `[P, L·2·H]` alone, or
    /// `[P, H]` with `transform.{0,2}.{weight,bias}`.
    pub fn from_tensors(
        map: &BTreeMap<String, RawTensor>,
        shape: PrefixShape,
        device: &B::Device,
    ) -> Result<Self, String> {
        let (h, w) = (shape.hidden, shape.width());
        if shape.num_heads == 0 || h % shape.num_heads != 0 {
            return Err(format!(
                "hidden size {h} is not a multiple of the {} heads",
                shape.num_heads
            ));
        }
        let emb = map
            .get(keys::EMBEDDING)
            .ok_or_else(|| format!("missing tensor \"{}\"", keys::EMBEDDING))?;
        let [l0, l2] = keys::TRANSFORM_LINEARS;
        let reparam = map.contains_key(&keys::transform(l0, "weight"));
        let width = if reparam { h } else { w };
        if emb.shape.len() != 2 || emb.shape[1] != width || emb.shape[0] == 0 {
            return Err(format!(
                "tensor \"{}\" has shape {:?}, expected [P > 0, {width}] ({} layers × 2 × hidden {h}{})",
                keys::EMBEDDING,
                emb.shape,
                shape.num_layers,
                if reparam {
                    ", reparameterised: [P, hidden]"
                } else {
                    ""
                }
            ));
        }
        let p = emb.shape[0];
        let embedding = new_param(
            &keys::param(keys::EMBEDDING),
            emb.data.clone(),
            [p, width],
            device,
        );
        let transform = if reparam {
            let get = |key: &str, want: &[usize]| -> Result<Vec<f32>, String> {
                let t = map
                    .get(key)
                    .ok_or_else(|| format!("missing tensor \"{key}\""))?;
                if t.shape != want {
                    return Err(format!(
                        "tensor \"{key}\" has shape {:?}, expected {want:?}",
                        t.shape
                    ));
                }
                Ok(t.data.clone())
            };
            let r = map[&keys::transform(l0, "weight")]
                .shape
                .first()
                .copied()
                .unwrap_or(0);
            let lin = |i: &str, d_in: usize, d_out: usize| -> Result<Linear<B>, String> {
                let (wk, bk) = (keys::transform(i, "weight"), keys::transform(i, "bias"));
                let wt = get(&wk, &[d_out, d_in])?;
                Ok(Linear {
                    weight: new_param(
                        &keys::param(&wk),
                        transpose(&wt, d_out, d_in),
                        [d_in, d_out],
                        device,
                    ),
                    bias: Some(new_param(
                        &keys::param(&bk),
                        get(&bk, &[d_out])?,
                        [d_out],
                        device,
                    )),
                })
            };
            Some(PrefixMlp {
                linear1: lin(l0, h, r)?,
                linear2: lin(l2, r, w)?,
            })
        } else {
            None
        };
        for k in map.keys() {
            let known = k == keys::EMBEDDING
                || (reparam
                    && keys::TRANSFORM_LINEARS.iter().any(|i| {
                        *k == keys::transform(i, "weight") || *k == keys::transform(i, "bias")
                    }));
            if !known {
                return Err(format!("unexpected tensor \"{k}\""));
            }
        }
        Ok(DeepPrompt {
            embedding,
            transform,
            num_layers: shape.num_layers,
            num_heads: shape.num_heads,
            hidden: h,
        })
    }

    /// The parameters under PEFT's names and PyTorch layouts.
    pub fn named_tensors(&self) -> BTreeMap<String, RawTensor> {
        self.named_with(|p2| to_host(p2.val()), |p1| to_host(p1.val()))
    }

    /// The gradients, under the same names and layouts (zeros where none flowed).
    pub fn named_grads(&self, grads: &GradientsParams) -> BTreeMap<String, RawTensor>
    where
        B: AutodiffBackend,
    {
        self.named_with(
            |p| {
                grads
                    .get::<B::InnerBackend, 2>(p.id)
                    .map(to_host)
                    .unwrap_or_else(|| RawTensor::zeros(&p.dims()))
            },
            |p| {
                grads
                    .get::<B::InnerBackend, 1>(p.id)
                    .map(to_host)
                    .unwrap_or_else(|| RawTensor::zeros(&p.dims()))
            },
        )
    }

    fn named_with(
        &self,
        mut read2: impl FnMut(&Param<Tensor<B, 2>>) -> RawTensor,
        mut read1: impl FnMut(&Param<Tensor<B, 1>>) -> RawTensor,
    ) -> BTreeMap<String, RawTensor> {
        let mut out = BTreeMap::new();
        out.insert(keys::EMBEDDING.to_string(), read2(&self.embedding));
        if let Some(m) = &self.transform {
            let [l0, l2] = keys::TRANSFORM_LINEARS;
            for (i, l) in [(l0, &m.linear1), (l2, &m.linear2)] {
                out.insert(keys::transform(i, "weight"), read2(&l.weight).transposed());
                let b = read1(l.bias.as_ref().expect("linears here have biases"));
                out.insert(keys::transform(i, "bias"), b);
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    type B = burn_flex::Flex;

    #[test]
    fn layout_matches_pefts_view_and_permute() {
        // PEFT: past_key_values = m.view(b, P, 2L, nh, hd).permute(2, 0, 3, 1, 4); layer i's key
        // is index 2i, its value 2i + 1.
        let shape = PrefixShape {
            num_layers: 2,
            num_heads: 2,
            hidden: 4,
        };
        let (p, w) = (3, shape.width());
        let data: Vec<f32> = (0..p * w).map(|x| x as f32).collect();
        let m = Tensor::<B, 2>::from_data(
            burn::tensor::TensorData::new(data, [p, w]),
            &Default::default(),
        );
        let pre = Prefixes::from_rows(m.reshape([1, p, w]).expand([2, p, w]), None, shape);
        let (k1, v1) = &pre.layers[1];
        let RawTensor {
            shape: s, data: k, ..
        } = to_host(k1.clone());
        assert_eq!(s, vec![2, 2, 3, 2]);
        // batch 1, head 1, token 2, dim 0: row 2, block 2 (layer 1 key), head 1 → 2*16 + 2*4 + 1*2
        // index ((batch 1 · 2 heads + head 1) · 3 tokens + token 2) · 2 dims
        assert_eq!(k[((2 + 1) * 3 + 2) * 2], (2 * 16 + 2 * 4 + 2) as f32);
        let v = to_host(v1.clone()).data;
        assert_eq!(v[0], (3 * 4) as f32);
        assert_eq!(to_host(pre.bias).data, vec![0.0; 6]);
    }

    #[test]
    fn names_round_trip_and_shapes_are_checked() {
        let shape = PrefixShape {
            num_layers: 2,
            num_heads: 2,
            hidden: 4,
        };
        let device = Default::default();
        let mut rng = StdRng::seed_from_u64(1);
        for reparam in [Reparam::None, Reparam::Mlp] {
            let d = DeepPrompt::<B>::init(reparam, 5, 6, shape, &mut rng, &device);
            assert_eq!(d.reparam(), reparam);
            let named = d.named_tensors();
            let back = DeepPrompt::<B>::from_tensors(&named, shape, &device).unwrap();
            assert_eq!(back.named_tensors(), named);
            assert_eq!(to_host(back.forward()), to_host(d.forward()));
            assert_eq!(d.forward().dims(), [5, 16]);
            let other = PrefixShape {
                num_layers: 3,
                ..shape
            };
            let e = DeepPrompt::<B>::from_tensors(&named, other, &device).unwrap_err();
            assert!(e.contains("expected"), "{e}");
        }
    }
}
