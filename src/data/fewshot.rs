//! Choosing the few labelled examples.

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand::seq::SliceRandom;

use super::dataset::Example;
use crate::error::{Error, Result};

/// Which training rows a few-shot run learns from.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FewShot {
    /// The first `floor(n * frac)` rows, as the published recipe does.
    Frac(f64),
    /// `k` rows per class, drawn with the seed, kept in file order.
    Shots(usize),
    /// Every row.
    All,
}

impl FewShot {
    /// The chosen rows of `train` (classes are `0..n_classes`; `seed` drives [`FewShot::Shots`]).
    /// Returns `Error::Invalid` when a fraction is outside (0, 1], a class has fewer than `k`
    /// rows, or nothing is chosen.
    pub fn select(&self, train: &[Example], n_classes: usize, seed: u64) -> Result<Vec<Example>> {
        let chosen: Vec<Example> = match *self {
            FewShot::All => train.to_vec(),
            FewShot::Frac(f) => {
                if !(f > 0.0 && f <= 1.0) {
                    return Err(Error::invalid(format!("`frac` must be in (0, 1], got {f}")));
                }
                train[..(train.len() as f64 * f) as usize].to_vec()
            }
            FewShot::Shots(k) => {
                let mut idx: Vec<usize> = (0..train.len()).collect();
                idx.shuffle(&mut StdRng::seed_from_u64(seed));
                let mut taken = vec![0usize; n_classes];
                let mut keep: Vec<usize> = idx
                    .into_iter()
                    .filter(|&i| {
                        let c = train[i].label;
                        let ok = taken[c] < k;
                        taken[c] += ok as usize;
                        ok
                    })
                    .collect();
                if let Some(c) = taken.iter().position(|&t| t < k) {
                    return Err(Error::invalid(format!(
                        "`shots` {k}: class {c} has only {} training rows",
                        taken[c]
                    )));
                }
                keep.sort_unstable();
                keep.into_iter().map(|i| train[i].clone()).collect()
            }
        };
        if chosen.is_empty() {
            return Err(Error::invalid("the few-shot selection is empty"));
        }
        Ok(chosen)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rows(n: usize) -> Vec<Example> {
        (0..n)
            .map(|i| Example {
                text_a: format!("t{i}"),
                text_b: None,
                label: i % 2,
                line: i + 1,
            })
            .collect()
    }

    #[test]
    fn frac_takes_the_first_rows() {
        let s = FewShot::Frac(0.01).select(&rows(11363), 2, 0).unwrap();
        assert_eq!(s.len(), 113);
        assert_eq!(s[0].line, 1);
    }

    #[test]
    fn shots_are_balanced_seeded_and_ordered() {
        let a = FewShot::Shots(4).select(&rows(100), 2, 7).unwrap();
        let b = FewShot::Shots(4).select(&rows(100), 2, 7).unwrap();
        let c = FewShot::Shots(4).select(&rows(100), 2, 8).unwrap();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert_eq!(a.iter().filter(|e| e.label == 0).count(), 4);
        assert!(a.windows(2).all(|w| w[0].line < w[1].line));
        assert!(FewShot::Shots(60).select(&rows(100), 2, 7).is_err());
    }
}
