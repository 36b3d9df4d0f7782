//! Classification metrics.

use serde::{Deserialize, Serialize};

/// Counts and F1 of one class.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ClassCounts {
    /// Class name.
    pub class: String,
    /// Gold examples of this class.
    pub support: usize,
    /// Examples predicted as this class.
    pub predicted: usize,
    /// Examples of this class predicted correctly.
    pub correct: usize,
    /// F1 of this class, `2·correct / (support + predicted)` (0 when both are 0).
    pub f1: f64,
}

/// Accuracy and macro-F1 of predictions on a split, with per-class counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Metrics {
    /// Fraction of examples predicted correctly (0 for no examples).
    pub accuracy: f64,
    /// Mean of the per-class F1 scores, every class weighted equally.
    pub macro_f1: f64,
    /// Number of examples.
    pub n: usize,
    /// One entry per class, in class-index order.
    pub per_class: Vec<ClassCounts>,
}

impl Metrics {
    /// Metrics of predicted class indices `pred` against `gold` for the classes named `classes`.
    /// Panics when `gold` and `pred` differ in length.
    pub fn compute(gold: &[usize], pred: &[usize], classes: &[String]) -> Metrics {
        assert_eq!(gold.len(), pred.len());
        let per_class: Vec<ClassCounts> = classes
            .iter()
            .enumerate()
            .map(|(c, name)| {
                let support = gold.iter().filter(|&&g| g == c).count();
                let predicted = pred.iter().filter(|&&p| p == c).count();
                let correct = gold
                    .iter()
                    .zip(pred)
                    .filter(|&(&g, &p)| g == c && p == c)
                    .count();
                let f1 = if support + predicted == 0 {
                    0.0
                } else {
                    2.0 * correct as f64 / (support + predicted) as f64
                };
                ClassCounts {
                    class: name.clone(),
                    support,
                    predicted,
                    correct,
                    f1,
                }
            })
            .collect();
        let correct = gold.iter().zip(pred).filter(|(g, p)| g == p).count();
        Metrics {
            accuracy: if gold.is_empty() {
                0.0
            } else {
                correct as f64 / gold.len() as f64
            },
            macro_f1: per_class.iter().map(|c| c.f1).sum::<f64>() / classes.len().max(1) as f64,
            n: gold.len(),
            per_class,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accuracy_and_macro_f1() {
        let classes = vec!["0".to_string(), "1".to_string()];
        let m = Metrics::compute(&[0, 0, 1, 1], &[0, 1, 1, 1], &classes);
        assert_eq!(m.accuracy, 0.75);
        // class 0: p=1, r=.5 → f1 2/3; class 1: p=2/3, r=1 → f1 .8
        assert!((m.macro_f1 - (2.0 / 3.0 + 0.8) / 2.0).abs() < 1e-12);
        assert_eq!(
            (
                m.per_class[1].support,
                m.per_class[1].predicted,
                m.per_class[1].correct
            ),
            (2, 3, 2)
        );
        let all_one = Metrics::compute(&[0, 1], &[1, 1], &classes);
        assert_eq!(all_one.per_class[0].f1, 0.0);
    }
}
