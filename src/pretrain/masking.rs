//! Dynamic masked-LM masking: `[CLS] tokens [SEP]` sequences padded into a [`Batch`] whose
//! targets are the masked positions. 15% of the tokens (or whole words) are chosen; of those
//! 80% become `[MASK]`, 10% a random token, 10% stay. Special tokens are never chosen.

use rand::Rng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use crate::data::Batch;

/// Masking rates and the ids they need.
#[derive(Debug, Clone, Copy)]
pub struct Masking {
    /// Fraction of tokens chosen as targets.
    pub rate: f64,
    /// Choose whole words (all tokens of a word together) rather than single tokens.
    pub whole_word: bool,
    /// Id of `[CLS]` (never chosen).
    pub cls_id: u32,
    /// Id of `[SEP]` (never chosen).
    pub sep_id: u32,
    /// Id of `[PAD]`, used to fill shorter rows (never chosen).
    pub pad_id: u32,
    /// Id of `[MASK]`, which replaces 80% of the chosen tokens.
    pub mask_id: u32,
    /// Id of `[UNK]` (never chosen).
    pub unk_id: u32,
    /// Vocabulary size: random replacements are drawn from `0..vocab_size` (special ids excluded).
    pub vocab_size: usize,
}

impl Masking {
    fn special(&self, id: u32) -> bool {
        id == self.cls_id
            || id == self.sep_id
            || id == self.pad_id
            || id == self.mask_id
            || id == self.unk_id
    }

    /// A random token id that is not special.
    fn random_id(&self, rng: &mut StdRng) -> u32 {
        loop {
            let id = rng.random_range(0..self.vocab_size as u32);
            if !self.special(id) {
                return id;
            }
        }
    }

    /// Positions (within `ids`) chosen as targets. Per token: each non-special token with
    /// probability `rate`. Whole words: words in random order, taken while the count stays
    /// within `round(rate · n)` (at least 1), as transformers' whole-word collator does.
    fn choose(&self, ids: &[u32], cont: &[bool], rng: &mut StdRng) -> Vec<usize> {
        if !self.whole_word {
            return (0..ids.len())
                .filter(|&i| !self.special(ids[i]) && rng.random::<f64>() < self.rate)
                .collect();
        }
        let mut words: Vec<Vec<usize>> = Vec::new();
        for i in 0..ids.len() {
            if self.special(ids[i]) {
                continue;
            }
            match words.last_mut() {
                Some(w) if cont[i] && w.last() == Some(&(i - 1)) => w.push(i),
                _ => words.push(vec![i]),
            }
        }
        let n: usize = words.iter().map(|w| w.len()).sum();
        if n == 0 {
            return Vec::new();
        }
        let budget = ((n as f64 * self.rate).round() as usize).max(1);
        words.shuffle(rng);
        let mut out = Vec::new();
        for w in words {
            if out.len() + w.len() <= budget {
                out.extend(w);
            }
            if out.len() >= budget {
                break;
            }
        }
        out.sort_unstable();
        out
    }

    /// Pads `[CLS] seq [SEP]` rows into a batch with MLM targets.
    pub fn batch(&self, seqs: &[(Vec<u32>, Vec<bool>)], rng: &mut StdRng) -> Batch {
        let b = seqs.len();
        let l = seqs.iter().map(|(s, _)| s.len() + 2).max().unwrap_or(0);
        let mut batch = Batch {
            batch_size: b,
            seq_len: l,
            ids: vec![self.pad_id; b * l],
            token_types: vec![0; b * l],
            attention: vec![0; b * l],
            mask_positions: Vec::new(),
            pseudo_positions: Vec::new(),
            labels: Vec::new(),
            targets: Vec::new(),
        };
        for (r, (seq, cont)) in seqs.iter().enumerate() {
            let row = r * l;
            let mut ids = Vec::with_capacity(seq.len() + 2);
            ids.push(self.cls_id);
            ids.extend_from_slice(seq);
            ids.push(self.sep_id);
            let mut c = Vec::with_capacity(ids.len());
            c.push(false);
            c.extend_from_slice(cont);
            c.push(false);
            for p in self.choose(&ids, &c, rng) {
                batch.targets.push((row + p, ids[p]));
                let x: f64 = rng.random();
                if x < 0.8 {
                    ids[p] = self.mask_id;
                } else if x < 0.9 {
                    ids[p] = self.random_id(rng);
                }
            }
            batch.ids[row..row + ids.len()].copy_from_slice(&ids);
            batch.attention[row..row + ids.len()].fill(1);
        }
        batch
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn masking(whole_word: bool) -> Masking {
        Masking {
            rate: 0.15,
            whole_word,
            cls_id: 101,
            sep_id: 102,
            pad_id: 0,
            mask_id: 103,
            unk_id: 100,
            vocab_size: 21128,
        }
    }

    #[test]
    fn rates_and_specials() {
        let m = masking(false);
        let mut rng = StdRng::seed_from_u64(7);
        let seqs: Vec<(Vec<u32>, Vec<bool>)> = (0..400)
            .map(|i| {
                (
                    (0..60).map(|k| 200 + (i * 7 + k) % 5000).collect(),
                    vec![false; 60],
                )
            })
            .collect();
        let b = m.batch(&seqs, &mut rng);
        let n = b.targets.len() as f64 / (400.0 * 60.0);
        assert!((n - 0.15).abs() < 0.01, "target rate {n}");
        let masked = b.targets.iter().filter(|(p, _)| b.ids[*p] == 103).count() as f64
            / b.targets.len() as f64;
        assert!((masked - 0.8).abs() < 0.02, "[MASK] share {masked}");
        let kept = b.targets.iter().filter(|(p, t)| b.ids[*p] == *t).count() as f64
            / b.targets.len() as f64;
        assert!((kept - 0.1).abs() < 0.02, "kept share {kept}");
        for (p, _) in &b.targets {
            assert!(p % b.seq_len != 0, "[CLS] chosen");
            assert!(b.attention[*p] == 1);
        }
        // rows are [CLS] ... [SEP] then padding
        assert_eq!(b.ids[0], 101);
        assert_eq!(b.ids[61], 102);
    }

    #[test]
    fn whole_words_go_together() {
        let m = masking(true);
        let mut rng = StdRng::seed_from_u64(3);
        // words of 3 tokens
        let ids: Vec<u32> = (0..90).map(|k| 300 + k).collect();
        let cont: Vec<bool> = (0..90).map(|k| k % 3 != 0).collect();
        for _ in 0..50 {
            let b = m.batch(&[(ids.clone(), cont.clone())], &mut rng);
            assert_eq!(
                b.targets.len(),
                12,
                "budget round(0.15 * 90) = 14, whole words of 3"
            );
            for (p, _) in &b.targets {
                let k = p - 1; // position in `ids`
                let start = k - k % 3;
                for q in start..start + 3 {
                    assert!(b.targets.iter().any(|(pp, _)| *pp == q + 1), "word split");
                }
            }
        }
    }
}
