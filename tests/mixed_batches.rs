//! The server's mixed-task batches: rows of different adapters (P-tuning vectors, deep-prompt
//! prefixes of different lengths, a linear head on `[MASK]`, the same head on `[CLS]` and on the
//! MLM head's transform, a two-token manual template, the same template calibrated) in one
//! forward pass give what each task gives alone. And a verbalizer head at its start is the
//! label-word classifier.

mod common;

use common::*;
use ptune::adapter::{Adapter, AdapterInfo, FORMAT, FORMAT_V2, Task};
use ptune::classifier::{Head, verbalizer_head_init};
use ptune::model::ModelDir;
use ptune::serve::mixed::MixedTasks;

type B = ptune::Cpu;

fn info(
    template: &str,
    labels: &str,
    n_prompts: usize,
    prefix_len: usize,
    head: bool,
) -> AdapterInfo {
    AdapterInfo {
        format: if prefix_len > 0 || head {
            FORMAT_V2
        } else {
            FORMAT
        }
        .into(),
        template: template.into(),
        labels: labels.into(),
        max_len: 40,
        hidden_size: 256,
        n_prompts,
        backbone: String::new(),
        source: "test".into(),
        prefix_len,
        num_layers: if prefix_len > 0 { 4 } else { 0 },
        num_heads: if prefix_len > 0 { 4 } else { 0 },
        head,
        head_on_cls: false,
        head_on_transform: false,
    }
}

/// Deterministic pseudo-random values in ±scale.
fn values(n: usize, seed: u32, scale: f32) -> Vec<f32> {
    (0..n)
        .map(|i| {
            let x = (i as u32)
                .wrapping_mul(2654435761)
                .wrapping_add(seed.wrapping_mul(40503));
            ((x >> 8) as f32 / (1u32 << 24) as f32 * 2.0 - 1.0) * scale
        })
        .collect()
}

/// The largest absolute difference between two tables of class scores, row by row.
fn max_row_diff(a: &[Vec<f32>], b: &[Vec<f32>]) -> f32 {
    assert_eq!(a.len(), b.len(), "row count mismatch");
    a.iter()
        .zip(b)
        .map(|(x, y)| max_abs_diff(x, y))
        .fold(0.0, f32::max)
}

/// The shipped backbone (on the default CPU device) and its tokenizer.
fn zh_mini_on_cpu() -> (
    ptune::model::bert::BertForMaskedLM<B>,
    ptune::tokenizer::BertTokenizer,
) {
    let dir = ModelDir::open(&zh_mini()).unwrap();
    (
        dir.load::<B>(&Default::default()).unwrap(),
        dir.tokenizer().unwrap(),
    )
}

/// Two prompt vectors, a 3-token prefix and a linear head, described by `info`.
fn headed(info: AdapterInfo) -> Adapter {
    Adapter {
        info,
        vectors: values(2 * 256, 3, 0.05),
        prefix: values(3 * 2048, 4, 1.0),
        head: Some((values(2 * 256, 5, 0.1), vec![0.1, -0.2])),
        class_bias: None,
    }
}

#[test]
fn mixed_task_batches_equal_single_task_scoring() {
    let device = Default::default();
    let (lm, tok) = zh_mini_on_cpu();
    let adapters = [
        Adapter {
            info: info("[P]*4 [MASK] [P]*4 {text}", "0=不,1=很", 8, 0, false),
            vectors: values(8 * 256, 1, 0.05),
            prefix: Vec::new(),
            head: None,
            class_bias: None,
        },
        Adapter {
            info: info("[MASK]{text}", "0=不,1=很", 0, 6, false),
            vectors: Vec::new(),
            prefix: values(6 * 2048, 2, 1.0),
            head: None,
            class_bias: None,
        },
        headed(info("[P]*2[MASK]{text}", "neg=不,pos=很", 2, 3, true)),
        // the same prompts and head, read at [CLS]: the next check sees it differ
        headed(AdapterInfo {
            head_on_cls: true,
            ..info("[P]*2[MASK]{text}", "neg=不,pos=很", 2, 3, true)
        }),
        // and read through the MLM head's transform (a verbalizer head)
        headed(AdapterInfo {
            head_on_transform: true,
            ..info("[P]*2[MASK]{text}", "neg=不,pos=很", 2, 3, true)
        }),
        Adapter {
            info: info("[MASK]*2满意。{text}", "0=不太,1=非常", 0, 0, false),
            vectors: Vec::new(),
            prefix: Vec::new(),
            head: None,
            class_bias: None,
        },
        // the same manual template, calibrated (a class bias on the label-word scores)
        Adapter {
            info: AdapterInfo {
                format: FORMAT_V2.into(),
                ..info("[MASK]*2满意。{text}", "0=不太,1=非常", 0, 0, false)
            },
            vectors: Vec::new(),
            prefix: Vec::new(),
            head: None,
            class_bias: Some(vec![0.7, -0.4]),
        },
    ];
    let tasks: Vec<Task<B>> = adapters
        .iter()
        .map(|a| a.task(&lm, &tok, &device).unwrap())
        .collect();
    let texts = [
        "物流很快，包装完好",
        "质量太差，再也不买了",
        "一般般吧",
        "这家酒店的服务真是没得说，房间干净，早餐丰富，下次还来，强烈推荐给大家！！",
        "不错",
        "客服态度恶劣，等了三天才发货，东西还是坏的，非常失望，要求退款也没人理会。",
    ];
    // every task's texts interleaved with every other's
    let mut items = Vec::new();
    for (i, t) in texts.iter().enumerate() {
        for task in 0..tasks.len() {
            items.push(((task + i) % tasks.len(), *t));
        }
    }
    let mixed = MixedTasks::new(tasks.clone(), &device);
    for batch in [3, 32] {
        let got = mixed.classify(&tok, &items, batch, &device).unwrap();
        let mut worst = 0.0f32;
        for (task_idx, task) in tasks.iter().enumerate() {
            let mine: Vec<(&str, Option<&str>)> = items
                .iter()
                .filter(|(t, _)| *t == task_idx)
                .map(|(_, s)| (*s, None))
                .collect();
            let alone = task.classify(&tok, &mine, 4, &device).unwrap();
            let from_mixed: Vec<_> = items
                .iter()
                .zip(&got)
                .filter(|((t, _), _)| *t == task_idx)
                .map(|(_, p)| p)
                .collect();
            assert_eq!(alone.len(), from_mixed.len());
            for (a, m) in alone.iter().zip(from_mixed) {
                assert_eq!(a.label, m.label, "task {task_idx}");
                assert_eq!(a.truncated, m.truncated);
                worst = worst.max(max_abs_diff(&a.probs, &m.probs));
            }
        }
        assert!(
            worst <= 1e-5,
            "batch {batch}: probabilities differ by {worst:e}"
        );
        eprintln!("batch {batch}: mixed vs single-task probabilities within {worst:.1e}");
    }
    // the tasks really differ (a test of nothing would pass trivially)
    let one: Vec<_> = (0..tasks.len()).map(|t| (t, texts[0])).collect();
    let p = mixed.classify(&tok, &one, 8, &device).unwrap();
    assert!(p.windows(2).all(|w| w[0].probs != w[1].probs), "{p:?}");
}

/// What GPU backends do to every batch (`--len-multiple`, `PromptClassifier::shaped`): rows
/// padded on to a longer length, the padding masked out. Every kind of task scores the same
/// and has the same training loss (dropout off) as on the batch at its own length.
#[test]
fn batches_padded_past_their_longest_row_score_and_train_the_same() {
    let device = Default::default();
    let (lm, tok) = zh_mini_on_cpu();
    let texts = [
        "物流很快，包装完好",
        "质量太差，再也不买了，客服也不理人",
        "一般般吧",
    ];
    let kinds = [
        ("[P]*4 [MASK] [P]*4 {text}", "0=不,1=很", 8, 0, false),
        ("[MASK]{text}", "0=不,1=很", 0, 6, false),
        ("[P]*2[MASK]{text}", "neg=不,pos=很", 2, 3, true),
        ("[MASK]*2满意。{text}", "0=不太,1=非常", 0, 0, false),
    ];
    for (i, &(template, labels, n_prompts, prefix_len, head)) in kinds.iter().enumerate() {
        let adapter = Adapter {
            info: info(template, labels, n_prompts, prefix_len, head),
            vectors: values(n_prompts * 256, 1 + i as u32, 0.05),
            prefix: values(prefix_len * 2048, 2 + i as u32, 1.0),
            head: head.then(|| (values(2 * 256, 5, 0.1), vec![0.1, -0.2])),
            class_bias: None,
        };
        let task = adapter.task(&lm, &tok, &device).unwrap();
        let encoded: Vec<_> = texts
            .iter()
            .map(|t| task.template.encode(&tok, t, None, task.max_len).unwrap())
            .collect();
        let items: Vec<_> = encoded.iter().zip([1, 0, 1]).collect();
        let mut batch = ptune::data::Batch::collate(&items, tok.pad_id);
        let words = &task.verbalizer.word_ids;
        batch.set_label_targets(words);
        if head {
            batch.keep_label_targets_only();
        }
        let wide = batch.clone().padded_to(batch.seq_len + 29, tok.pad_id);
        assert_eq!(wide.seq_len, batch.seq_len + 29);
        let c = &task.classifier;
        let (narrow_scores, wide_scores) = (
            c.class_scores(&batch, words, &device),
            c.class_scores(&wide, words, &device),
        );
        let worst = max_row_diff(&narrow_scores, &wide_scores);
        assert!(worst <= 1e-5, "{template}: scores differ by {worst:e}");
        let loss = |b: &ptune::data::Batch| c.loss(b, None, &device).into_scalar();
        let (a, b) = (loss(&batch), loss(&wide));
        assert!(
            a.is_finite() && (a - b).abs() <= 1e-5 * a.abs().max(1.0),
            "{template}: {a} vs {b}"
        );
    }
}

/// `--head verbalizer` starts from the label words' decoder rows and biases on the MLM head's
/// transform: before any training it scores like the label words (one-`[MASK]` templates,
/// with and without P-tuning vectors and deep prompts), and the same head on the untransformed
/// state does not.
#[test]
fn a_verbalizer_head_starts_as_the_label_words() {
    let device = Default::default();
    let (lm, tok) = zh_mini_on_cpu();
    let texts = ["物流很快，包装完好", "质量太差，再也不买了", "一般般吧"];
    for (template, labels, n_prompts, prefix_len) in [
        ("[MASK]满意。{text}", "0=不,1=很", 0, 0),
        ("[P]*2[MASK]{text}", "neg=不,pos=很", 2, 3),
    ] {
        let task = Adapter {
            info: info(template, labels, n_prompts, prefix_len, false),
            vectors: values(n_prompts * 256, 3, 0.05),
            prefix: values(prefix_len * 2048, 4, 1.0),
            head: None,
            class_bias: None,
        }
        .task(&lm, &tok, &device)
        .unwrap();
        let words = &task.verbalizer.word_ids;
        let encoded: Vec<_> = texts
            .iter()
            .map(|t| task.template.encode(&tok, t, None, task.max_len).unwrap())
            .collect();
        let items: Vec<_> = encoded.iter().collect();
        let batch = ptune::data::Batch::unlabelled(&items, tok.pad_id);
        let mut headed = task.classifier.clone();
        headed.head = Some(verbalizer_head_init(&headed.lm, words, &device));
        headed.head_kind = Head::Verbalizer;
        let want = task.classifier.class_scores(&batch, words, &device);
        let got = headed.class_scores(&batch, words, &device);
        let worst = max_row_diff(&want, &got);
        assert!(worst <= 1e-5, "{template}: scores differ by {worst:e}");
        headed.head_kind = Head::Linear;
        let untransformed = headed.class_scores(&batch, words, &device);
        assert!(
            want.iter()
                .zip(&untransformed)
                .any(|(a, b)| max_abs_diff(a, b) > 1e-2),
            "{template}: the transform made no difference"
        );
    }
}

#[test]
fn every_head_kind_round_trips_through_the_adapter_fields() {
    for kind in [Head::Mlm, Head::Linear, Head::Cls, Head::Verbalizer] {
        let i = info("[MASK]{text}", "0=不,1=很", 0, 0, false).with_head_kind(kind);
        assert_eq!(i.head, kind.is_linear(), "{i:?}");
        assert_eq!(i.head_kind(), kind, "{i:?}");
    }
}
