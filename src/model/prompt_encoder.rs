//! Prompt encoders: the small trainable network whose outputs are the continuous prompt
//! vectors spliced into the frozen LM's input embeddings.
//!
//! Weight names and layouts are those of the PyTorch reference module
//! (`embedding.weight`, `lstm.weight_ih_l0[_reverse]`, `mlp.0.weight`, ...), so a state
//! dict moves between the two unchanged.

use std::collections::BTreeMap;
use std::str::FromStr;

use burn::module::{Module, Param};
use burn::nn::{BiLstm, BiLstmConfig, Linear, Lstm};
use burn::optim::GradientsParams;
use burn::tensor::Tensor;
use burn::tensor::activation::relu;
use burn::tensor::backend::{AutodiffBackend, Backend};
use rand::Rng;
use rand::rngs::StdRng;

use super::io::host::{RawTensor, to_host, transpose};
use super::io::weights::new_param;
use crate::error::{Error, Result};

/// Which network produces the prompt vectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PromptEncoderKind {
    /// Embedding → 2-layer BiLSTM (H/2 per direction) → Linear-ReLU-Linear (P-tuning).
    Lstm,
    /// Embedding → Linear-ReLU-Linear.
    Mlp,
    /// The prompt vectors themselves are the parameters.
    Embedding,
}

impl FromStr for PromptEncoderKind {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        match s {
            "lstm" => Ok(Self::Lstm),
            "mlp" => Ok(Self::Mlp),
            "embedding" => Ok(Self::Embedding),
            _ => Err(format!(
                "unknown prompt encoder \"{s}\" (expected lstm, mlp or embedding)"
            )),
        }
    }
}

impl std::fmt::Display for PromptEncoderKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Self::Lstm => "lstm",
            Self::Mlp => "mlp",
            Self::Embedding => "embedding",
        })
    }
}

/// The PyTorch module's tensor names, spelled once: [`PromptEncoder::init`],
/// [`PromptEncoder::from_tensors`] and [`PromptEncoder::named_tensors`] all build them here.
pub mod keys {
    /// Namespace of the encoder's tensors in a run's trainable-weights file and of its
    /// burn parameter ids (`prompt.<PyTorch name>`).
    pub const NAMESPACE: &str = "prompt";
    /// The prompt embeddings `[n_prompts, hidden]`.
    pub const EMBEDDING: &str = "embedding.weight";
    /// One LSTM tensor: `part` is `weight_ih`, `weight_hh`, `bias_ih` or `bias_hh`, `dir` is
    /// `""` (forward) or `"_reverse"`.
    pub fn lstm(part: &str, layer: usize, dir: &str) -> String {
        format!("lstm.{part}_l{layer}{dir}")
    }
    /// The MLP's Linear `i` (`"0"` or `"2"`, as in `nn.Sequential`), `part` = `weight`|`bias`.
    pub fn mlp(i: &str, part: &str) -> String {
        format!("mlp.{i}.{part}")
    }
    /// The burn parameter id of the tensor named `key` (see [`NAMESPACE`]).
    pub fn param(key: &str) -> String {
        format!("{NAMESPACE}.{key}")
    }
}

/// The head of the `lstm` and `mlp` encoders: `Linear(H, H) → ReLU → Linear(H, H)`.
#[derive(Module, Debug)]
pub struct PromptMlp<B: Backend> {
    /// Tensor name `mlp.0`, `H → H`.
    pub linear1: Linear<B>,
    /// Tensor name `mlp.2`, `H → H`.
    pub linear2: Linear<B>,
}

/// A prompt encoder of any [`PromptEncoderKind`]: the kind follows from which parts are present.
#[derive(Module, Debug)]
pub struct PromptEncoder<B: Backend> {
    /// `[n_prompts, hidden]`.
    pub embedding: Param<Tensor<B, 2>>,
    /// Two bidirectional layers for `lstm`, none otherwise.
    pub lstm: Vec<BiLstm<B>>,
    /// The Linear-ReLU-Linear head for `lstm` and `mlp`; `None` for `embedding`.
    pub mlp: Option<PromptMlp<B>>,
}

impl<B: Backend> PromptEncoder<B> {
    /// The prompt vectors `[n_prompts, hidden]`.
    pub fn forward(&self) -> Tensor<B, 2> {
        let x = self.embedding.val();
        let [n, h] = x.dims();
        let mut x3 = x.reshape([1, n, h]);
        for layer in &self.lstm {
            x3 = layer.forward(x3, None).0;
        }
        let x = x3.reshape([n, h]);
        match &self.mlp {
            Some(m) => m.linear2.forward(relu(m.linear1.forward(x))),
            None => x,
        }
    }

    /// Which kind of encoder this is, read off its parts.
    pub fn kind(&self) -> PromptEncoderKind {
        match (self.lstm.is_empty(), self.mlp.is_some()) {
            (false, _) => PromptEncoderKind::Lstm,
            (true, true) => PromptEncoderKind::Mlp,
            (true, false) => PromptEncoderKind::Embedding,
        }
    }

    /// Number of prompt vectors it produces (the template's pseudo tokens).
    pub fn n_prompts(&self) -> usize {
        self.embedding.dims()[0]
    }

    /// A freshly initialised encoder, with PyTorch's default initialisation (LSTM and Linear
    /// weights uniform in ±1/sqrt(fan)), its prompt embeddings copied from `init_rows`.
    pub fn init(
        kind: PromptEncoderKind,
        init_rows: RawTensor,
        rng: &mut StdRng,
        device: &B::Device,
    ) -> Self {
        let (n, h) = (init_rows.shape[0], init_rows.shape[1]);
        let mut uniform = |len: usize, bound: f32| -> Vec<f32> {
            (0..len).map(|_| rng.random_range(-bound..bound)).collect()
        };
        let mut map = BTreeMap::new();
        map.insert(keys::EMBEDDING.to_string(), init_rows);
        if kind == PromptEncoderKind::Lstm {
            let hd = h / 2;
            let bound = 1.0 / (hd as f32).sqrt();
            for layer in 0..2 {
                for dir in ["", "_reverse"] {
                    for (name, shape) in [
                        ("weight_ih", vec![4 * hd, h]),
                        ("weight_hh", vec![4 * hd, hd]),
                        ("bias_ih", vec![4 * hd]),
                        ("bias_hh", vec![4 * hd]),
                    ] {
                        let len = shape.iter().product();
                        map.insert(
                            keys::lstm(name, layer, dir),
                            RawTensor::new(shape, uniform(len, bound)),
                        );
                    }
                }
            }
        }
        if kind != PromptEncoderKind::Embedding {
            let bound = 1.0 / (h as f32).sqrt();
            for i in ["0", "2"] {
                map.insert(
                    keys::mlp(i, "weight"),
                    RawTensor::new(vec![h, h], uniform(h * h, bound)),
                );
                map.insert(
                    keys::mlp(i, "bias"),
                    RawTensor::new(vec![h], uniform(h, bound)),
                );
            }
        }
        debug_assert_eq!(map[keys::EMBEDDING].shape, vec![n, h]);
        Self::from_tensors(kind, &map, device).expect("freshly built tensors have the right shapes")
    }

    /// Builds an encoder of `kind` from tensors named as in the PyTorch module.
    pub fn from_tensors(
        kind: PromptEncoderKind,
        map: &BTreeMap<String, RawTensor>,
        device: &B::Device,
    ) -> std::result::Result<Self, String> {
        let get = |key: &str, shape: &[usize]| -> std::result::Result<Vec<f32>, String> {
            let t = map
                .get(key)
                .ok_or_else(|| format!("missing tensor \"{key}\""))?;
            if t.shape != shape {
                return Err(format!(
                    "tensor \"{key}\" has shape {:?}, expected {shape:?}",
                    t.shape
                ));
            }
            Ok(t.data.clone())
        };
        let emb = map
            .get(keys::EMBEDDING)
            .ok_or_else(|| format!("missing tensor \"{}\"", keys::EMBEDDING))?;
        if emb.shape.len() != 2 {
            return Err(format!("tensor \"{}\" must be 2-D", keys::EMBEDDING));
        }
        let (n, h) = (emb.shape[0], emb.shape[1]);
        let embedding = new_param(
            &keys::param(keys::EMBEDDING),
            emb.data.clone(),
            [n, h],
            device,
        );
        let mut lstm = Vec::new();
        if kind == PromptEncoderKind::Lstm {
            if h % 2 != 0 {
                return Err(format!(
                    "the LSTM prompt encoder needs an even hidden size, got {h}"
                ));
            }
            let hd = h / 2;
            for layer in 0..2 {
                let mut bi: BiLstm<B> = BiLstmConfig::new(h, hd, true).init(device);
                for (dir, target) in [("", &mut bi.forward), ("_reverse", &mut bi.reverse)] {
                    let k = |part: &str| keys::lstm(part, layer, dir);
                    set_lstm(
                        target,
                        &k("weight_ih"),
                        &get(&k("weight_ih"), &[4 * hd, h])?,
                        &get(&k("weight_hh"), &[4 * hd, hd])?,
                        &get(&k("bias_ih"), &[4 * hd])?,
                        &get(&k("bias_hh"), &[4 * hd])?,
                        h,
                        hd,
                        device,
                    );
                }
                lstm.push(bi);
            }
        }
        let mlp = if kind == PromptEncoderKind::Embedding {
            None
        } else {
            let lin = |i: &str| -> std::result::Result<Linear<B>, String> {
                let (wk, bk) = (keys::mlp(i, "weight"), keys::mlp(i, "bias"));
                let w = transpose(&get(&wk, &[h, h])?, h, h);
                Ok(Linear {
                    weight: new_param(&keys::param(&wk), w, [h, h], device),
                    bias: Some(new_param(&keys::param(&bk), get(&bk, &[h])?, [h], device)),
                })
            };
            Some(PromptMlp {
                linear1: lin("0")?,
                linear2: lin("2")?,
            })
        };
        Ok(PromptEncoder {
            embedding,
            lstm,
            mlp,
        })
    }

    /// The parameters under the PyTorch module's names and layouts.
    pub fn named_tensors(&self) -> BTreeMap<String, RawTensor> {
        self.named_with(&mut ParamReader {
            read1: |p: &Param<Tensor<B, 1>>| to_host(p.val()),
            read2: |p: &Param<Tensor<B, 2>>| to_host(p.val()),
        })
    }

    /// The gradients of the parameters, under the same names and layouts.
    pub fn named_grads(&self, grads: &GradientsParams) -> BTreeMap<String, RawTensor>
    where
        B: AutodiffBackend,
    {
        self.named_with(&mut ParamReader {
            read1: |p: &Param<Tensor<B, 1>>| {
                grads
                    .get::<B::InnerBackend, 1>(p.id)
                    .map(to_host)
                    .unwrap_or_else(|| RawTensor::zeros(&p.dims()))
            },
            read2: |p: &Param<Tensor<B, 2>>| {
                grads
                    .get::<B::InnerBackend, 2>(p.id)
                    .map(to_host)
                    .unwrap_or_else(|| RawTensor::zeros(&p.dims()))
            },
        })
    }

    /// Walks the parameters in PyTorch naming, reading each through `reader` and converting
    /// burn's per-gate `[in, out]` matrices to PyTorch's packed `[4 * out, in]` layout.
    fn named_with<R1, R2>(&self, reader: &mut ParamReader<R1, R2>) -> BTreeMap<String, RawTensor>
    where
        R1: FnMut(&Param<Tensor<B, 1>>) -> RawTensor,
        R2: FnMut(&Param<Tensor<B, 2>>) -> RawTensor,
    {
        let mut out = BTreeMap::new();
        let mut put = |k: String, t: RawTensor| {
            out.insert(k, t);
        };
        put(keys::EMBEDDING.into(), (reader.read2)(&self.embedding));
        for (layer, bi) in self.lstm.iter().enumerate() {
            for (dir, l) in [("", &bi.forward), ("_reverse", &bi.reverse)] {
                let gates = [&l.input_gate, &l.forget_gate, &l.cell_gate, &l.output_gate];
                // the gates' `[out, in]` matrices and biases stacked row-wise
                let mut packed: [RawTensor; 4] =
                    std::array::from_fn(|_| RawTensor::new(vec![0], Vec::new()));
                for gate in gates {
                    let mats = [&gate.input_transform, &gate.hidden_transform];
                    for (j, lin) in mats.into_iter().enumerate() {
                        let w = (reader.read2)(&lin.weight).transposed();
                        packed[j].shape = vec![packed[j].shape[0] + w.shape[0], w.shape[1]];
                        packed[j].data.extend(w.data);
                        let b = (reader.read1)(lin.bias.as_ref().expect("LSTM gates have biases"));
                        packed[2 + j].shape = vec![packed[2 + j].shape[0] + b.shape[0]];
                        packed[2 + j].data.extend(b.data);
                    }
                }
                let [w_ih, w_hh, b_ih, b_hh] = packed;
                put(keys::lstm("weight_ih", layer, dir), w_ih);
                put(keys::lstm("weight_hh", layer, dir), w_hh);
                put(keys::lstm("bias_ih", layer, dir), b_ih);
                put(keys::lstm("bias_hh", layer, dir), b_hh);
            }
        }
        if let Some(m) = &self.mlp {
            for (i, l) in [("0", &m.linear1), ("2", &m.linear2)] {
                put(
                    keys::mlp(i, "weight"),
                    (reader.read2)(&l.weight).transposed(),
                );
                put(
                    keys::mlp(i, "bias"),
                    (reader.read1)(l.bias.as_ref().expect("bias")),
                );
            }
        }
        out
    }
}

struct ParamReader<R1, R2> {
    read1: R1,
    read2: R2,
}

/// PyTorch packs the four gates as rows (input, forget, cell, output) of one matrix.
const GATES: [usize; 4] = [0, 1, 2, 3];

#[allow(clippy::too_many_arguments)]
fn set_lstm<B: Backend>(
    lstm: &mut Lstm<B>,
    key: &str,
    w_ih: &[f32],
    w_hh: &[f32],
    b_ih: &[f32],
    b_hh: &[f32],
    d_in: usize,
    hd: usize,
    device: &B::Device,
) {
    for g in GATES {
        let gate = match g {
            0 => &mut lstm.input_gate,
            1 => &mut lstm.forget_gate,
            2 => &mut lstm.cell_gate,
            _ => &mut lstm.output_gate,
        };
        let rows =
            |m: &[f32], cols: usize| transpose(&m[g * hd * cols..(g + 1) * hd * cols], hd, cols);
        let k = keys::param(&format!("{key}.gate{g}"));
        gate.input_transform.weight =
            new_param(&format!("{k}.wi"), rows(w_ih, d_in), [d_in, hd], device);
        gate.hidden_transform.weight =
            new_param(&format!("{k}.wh"), rows(w_hh, hd), [hd, hd], device);
        gate.input_transform.bias = Some(new_param(
            &format!("{k}.bi"),
            b_ih[g * hd..(g + 1) * hd].to_vec(),
            [hd],
            device,
        ));
        gate.hidden_transform.bias = Some(new_param(
            &format!("{k}.bh"),
            b_hh[g * hd..(g + 1) * hd].to_vec(),
            [hd],
            device,
        ));
    }
}

/// Reads a prompt encoder saved as safetensors by ptune or by the PyTorch reference.
pub fn load_prompt_encoder<B: Backend>(
    path: &std::path::Path,
    kind: PromptEncoderKind,
    device: &B::Device,
) -> Result<PromptEncoder<B>> {
    let map = super::io::tensors::read_safetensors(path)?;
    PromptEncoder::from_tensors(kind, &map, device).map_err(|m| Error::file(path, m))
}
