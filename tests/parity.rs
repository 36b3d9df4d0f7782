//! Parity with Hugging Face transformers: fixtures written by tests/fixtures/make_fixtures.py.

mod common;

use burn::tensor::{Int, Tensor, TensorData};
use common::*;
use ptune::Cpu;
use ptune::model::host::to_host;
use ptune::model::{BertForMaskedLM, ModelDir};
use serde_json::Value;

const TOL: f32 = 1e-4;

fn load(dir: &std::path::Path) -> BertForMaskedLM<Cpu> {
    ModelDir::open(dir)
        .unwrap()
        .load::<Cpu>(&Default::default())
        .unwrap()
}

/// Logits `[batch, len, vocab]` as host rows.
fn logits(
    model: &BertForMaskedLM<Cpu>,
    ids: &[Vec<u32>],
    mask: &[Vec<u32>],
) -> (Vec<usize>, Vec<f32>) {
    let (b, l) = (ids.len(), ids[0].len());
    let flat = |v: &[Vec<u32>]| v.iter().flatten().map(|&x| x as i64).collect::<Vec<_>>();
    let dev = Default::default();
    let ids = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(flat(ids), [b, l]), &dev);
    let mask = Tensor::<Cpu, 2, Int>::from_data(TensorData::new(flat(mask), [b, l]), &dev);
    let t = to_host(model.forward(ids, mask));
    (t.shape, t.data)
}

fn json(path: &str) -> Value {
    serde_json::from_slice(&std::fs::read(fixture(path)).unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap() as f32)
        .collect()
}

/// Compares the recorded rows (top-k and slice) of one sequence; returns the max abs diff.
fn check_rows(rows: &Value, seq: &[f32], vocab: usize, s0: usize, s1: usize, what: &str) -> f32 {
    let mut worst = 0.0f32;
    for r in rows.as_array().unwrap() {
        let pos = r["pos"].as_u64().unwrap() as usize;
        let row = &seq[pos * vocab..(pos + 1) * vocab];
        let top_ids = u32s(&r["top_ids"]);
        let top_ours: Vec<f32> = top_ids.iter().map(|&i| row[i as usize]).collect();
        worst = worst.max(max_abs_diff(&top_ours, &floats(&r["top_logits"])));
        worst = worst.max(max_abs_diff(&row[s0..s1], &floats(&r["slice"])));
        // our own top-1 must be HF's top-1
        let best = (0..vocab)
            .max_by(|&a, &b| row[a].total_cmp(&row[b]))
            .unwrap();
        assert_eq!(best as u32, top_ids[0], "{what} pos {pos}: top-1 differs");
    }
    worst
}

#[test]
fn zh_mini_tokens_and_logits_match_transformers() {
    let fx = json("zh_mini_parity.json");
    let dir = ModelDir::open(&zh_mini()).unwrap();
    let tok = dir.tokenizer().unwrap();
    let model = load(&zh_mini());
    let (s0, s1) = (
        fx["slice_start"].as_u64().unwrap() as usize,
        fx["slice_end"].as_u64().unwrap() as usize,
    );
    let cases = fx["cases"].as_array().unwrap();
    assert!(cases.len() >= 20);
    let mut worst = 0.0f32;
    for case in cases {
        let text = case["text"].as_str().unwrap();
        let ids = tok.encode_with_specials(text, 512);
        assert_eq!(ids, u32s(&case["ids"]), "token ids differ for {text:?}");
        let (shape, data) = logits(&model, std::slice::from_ref(&ids), &[vec![1; ids.len()]]);
        worst = worst.max(check_rows(&case["rows"], &data, shape[2], s0, s1, text));
    }
    assert!(worst <= TOL, "max abs logit diff {worst} > {TOL}");
    eprintln!("zh-mini single sentences: max abs diff {worst:e}");
}

#[test]
fn zh_mini_padded_batch_matches_transformers() {
    let fx = json("zh_mini_parity.json");
    let model = load(&zh_mini());
    let (s0, s1) = (
        fx["slice_start"].as_u64().unwrap() as usize,
        fx["slice_end"].as_u64().unwrap() as usize,
    );
    let batch = &fx["batch"];
    let ids: Vec<Vec<u32>> = batch["ids"].as_array().unwrap().iter().map(u32s).collect();
    let mask: Vec<Vec<u32>> = batch["attention_mask"]
        .as_array()
        .unwrap()
        .iter()
        .map(u32s)
        .collect();
    assert!(
        mask.iter().any(|m| m.contains(&0)),
        "the batch must contain padding"
    );
    let (shape, data) = logits(&model, &ids, &mask);
    let per_seq = shape[1] * shape[2];
    let mut worst = 0.0f32;
    for (b, item) in batch["items"].as_array().unwrap().iter().enumerate() {
        let seq = &data[b * per_seq..(b + 1) * per_seq];
        worst = worst.max(check_rows(&item["rows"], seq, shape[2], s0, s1, "batch"));
    }
    assert!(worst <= TOL, "max abs logit diff {worst} > {TOL}");
}

#[test]
#[ignore = "needs ../shared/models/zh-mini/pytorch_model.bin (not shipped: 35 MB of duplicate weights; tiny-bert covers .bin parity); .ci/run runs it with --ignored where ../shared is present"]
fn zh_mini_pickle_and_safetensors_give_identical_logits() {
    let bin_dir = repo().join("../shared/models/zh-mini");
    assert!(
        bin_dir.join("pytorch_model.bin").is_file(),
        "{} is missing",
        bin_dir.join("pytorch_model.bin").display()
    );
    let tmp = tempfile::tempdir().unwrap();
    for f in ["config.json", "vocab.txt", "pytorch_model.bin"] {
        std::os::unix::fs::symlink(bin_dir.join(f).canonicalize().unwrap(), tmp.path().join(f))
            .unwrap();
    }
    let a = load(&zh_mini());
    let b = load(tmp.path());
    let ids = vec![vec![101, 6821, 702, 2797, 3322, 103, 1962, 4500, 102]];
    let mask = vec![vec![1; 9]];
    assert_eq!(logits(&a, &ids, &mask).1, logits(&b, &ids, &mask).1);
}

#[test]
fn tiny_checkpoints_in_every_format_match_transformers() {
    let fx = json("tiny_parity.json");
    let f32_st = load(&fixture("tiny-bert"));
    let legacy = load(&fixture("tiny-bert-legacy"));
    let fp16 = load(&fixture("tiny-bert-fp16"));
    // the same directory read through the pickle instead of safetensors
    let bin_only = copy_dir(&fixture("tiny-bert"));
    std::fs::remove_file(bin_only.path().join("model.safetensors")).unwrap();
    let dir = ModelDir::open(bin_only.path()).unwrap();
    assert_eq!(dir.weight_format, ptune::model::WeightFormat::PyTorchPickle);
    let bin = load(bin_only.path());
    let tok = ModelDir::open(&fixture("tiny-bert"))
        .unwrap()
        .tokenizer()
        .unwrap();
    for case in fx["cases"].as_array().unwrap() {
        let ids = tok.encode_with_specials(case["text"].as_str().unwrap(), 64);
        assert_eq!(ids, u32s(&case["ids"]));
        let mask = vec![vec![1; ids.len()]];
        let want: Vec<f32> = case["logits"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let want16: Vec<f32> = case["logits_fp16"]
            .as_array()
            .unwrap()
            .iter()
            .flat_map(floats)
            .collect();
        let got = logits(&f32_st, std::slice::from_ref(&ids), &mask).1;
        assert!(
            max_abs_diff(&got, &want) <= TOL,
            "safetensors f32: {}",
            max_abs_diff(&got, &want)
        );
        assert_eq!(
            got,
            logits(&bin, std::slice::from_ref(&ids), &mask).1,
            ".bin differs from .safetensors"
        );
        assert_eq!(
            got,
            logits(&legacy, std::slice::from_ref(&ids), &mask).1,
            "legacy keys differ"
        );
        let got16 = logits(&fp16, std::slice::from_ref(&ids), &mask).1;
        assert!(
            max_abs_diff(&got16, &want16) <= TOL,
            "fp16: {}",
            max_abs_diff(&got16, &want16)
        );
        assert!(
            max_abs_diff(&got16, &want) > 1e-4,
            "fp16 weights should not be bit-equal to f32"
        );
    }
}

#[test]
fn fill_mask_top5_matches_transformers() {
    // transformers' fill-mask pipeline on zh-mini for this text: 器 的 不 就 制 (fixture case 0).
    let fx = json("zh_mini_parity.json");
    let want = u32s(&fx["cases"][0]["rows"][5]["top_ids"]);
    assert_eq!(fx["cases"][0]["rows"][5]["pos"], 5);
    let out = ptune(&["fill-mask", "这个手机[MASK]好用", "--top-k", "5", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let got: Vec<u32> = v[0]["candidates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c[1].as_u64().unwrap() as u32)
        .collect();
    assert_eq!(got, want);
}

/// Classification computes the last layer only at `[MASK]` rows; its class scores must equal
/// the label words' logits read from the full forward pass (itself checked against
/// transformers above), with the `[MASK]` at a different position in every example.
#[test]
fn scores_at_mask_equal_full_forward_logits() {
    use ptune::classifier::PromptClassifier;
    use ptune::data::Batch;
    use ptune::prompt::{Template, Verbalizer};

    let dir = ModelDir::open(&zh_mini()).unwrap();
    let tok = dir.tokenizer().unwrap();
    let texts = [
        "这个手机很好用",
        "质量太差了，不推荐购买。",
        "好",
        "物流很快，包装完好，但是电池不耐用，总体还可以吧",
    ];
    for spec in [
        "{text} [MASK]",
        "[MASK]满意。{text}",
        "[P]*2 {text} [MASK][MASK]",
    ] {
        let template = Template::parse(spec, &tok).unwrap();
        let labels = if template.n_mask() == 1 {
            "0=不,1=很"
        } else {
            "0=不好,1=很好"
        };
        let words = Verbalizer::parse(labels, &tok, template.n_mask())
            .unwrap()
            .word_ids;
        let encoded: Vec<_> = texts
            .iter()
            .map(|t| template.encode(&tok, t, None, 64).unwrap())
            .collect();
        let items: Vec<_> = encoded.iter().map(|e| (e, 0usize)).collect();
        let batch = Batch::collate(&items, 0);
        let classifier = PromptClassifier::new(dir.load::<Cpu>(&Default::default()).unwrap(), None);
        let scores = classifier.class_scores(&batch, &words, &Default::default());

        let rows = |flat: &[u32]| -> Vec<Vec<u32>> {
            flat.chunks(batch.seq_len).map(|r| r.to_vec()).collect()
        };
        let (shape, full) = logits(&classifier.lm, &rows(&batch.ids), &rows(&batch.attention));
        let vocab = shape[2];
        let n_mask = template.n_mask();
        for (i, row_scores) in scores.iter().enumerate() {
            for (c, ids) in words.iter().enumerate() {
                let expected: f32 = (0..n_mask)
                    .map(|k| full[batch.mask_positions[i * n_mask + k] * vocab + ids[k] as usize])
                    .sum::<f32>()
                    / n_mask as f32;
                let diff = (row_scores[c] - expected).abs();
                assert!(
                    diff <= 1e-4,
                    "{spec}: example {i} class {c}: {} vs {expected}",
                    row_scores[c]
                );
            }
        }
    }
}
