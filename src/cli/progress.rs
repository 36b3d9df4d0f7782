//! What a training run shows on the terminal: a progress bar per epoch and one line per
//! evaluated epoch, on stderr (the library reports through [`Reporter`] and prints nothing).

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use ptune::train::{EpochRecord, Method, Reporter, Silent, StepProgress};

/// The reporter for `train` and `compare`: [`Progress`], or nothing with `--quiet`.
pub fn reporter(quiet: bool) -> Box<dyn Reporter> {
    if quiet {
        Box::new(Silent)
    } else {
        Box::new(Progress::default())
    }
}

/// Progress bars and per-epoch lines on stderr.
#[derive(Default)]
pub struct Progress {
    bar: Option<ProgressBar>,
}

impl Reporter for Progress {
    fn resumed(&mut self, checkpoint: &Path, epoch: usize, step: usize) {
        eprintln!(
            "resuming from {} (epoch {epoch} done, step {step})",
            checkpoint.display()
        );
    }

    fn epoch_started(&mut self, method: Method, epoch: usize, epochs: usize, steps: usize) {
        let bar = ProgressBar::new(steps as u64);
        bar.set_style(
            ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} {msg} ({elapsed}<{eta})")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_prefix(format!("{} epoch {epoch}/{epochs}", method.name()));
        self.bar = Some(bar);
    }

    fn stepped(&mut self, p: &StepProgress) {
        if let Some(bar) = &self.bar {
            bar.inc(1);
            bar.set_message(format!(
                "loss {:.4}  lr {:.2e}  {:.1} ex/s",
                p.mean_loss,
                p.lr,
                p.examples as f64 / p.seconds
            ));
        }
    }

    fn epoch_trained(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }

    fn diverged(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.abandon();
        }
    }

    fn epoch_done(&mut self, method: Method, epochs: usize, r: &EpochRecord, best: bool) {
        eprintln!(
            "{} epoch {}/{epochs}  loss {:.4}  lr {:.2e}  valid {:.4}{}{}  {:.1} ex/s  (train {:.0}s, eval {:.0}s)",
            method.name(),
            r.epoch,
            r.loss.unwrap_or(f64::NAN),
            r.lr,
            r.valid.accuracy,
            r.test
                .as_ref()
                .map_or(String::new(), |t| format!("  test {:.4}", t.accuracy)),
            if best { "  *best valid" } else { "" },
            r.examples_per_s,
            r.train_seconds,
            r.eval_seconds
        );
    }

    fn tested(&mut self, method: Method, r: &EpochRecord) {
        eprintln!(
            "{} test at best valid (epoch {}): {:.4}",
            method.name(),
            r.epoch,
            r.test.as_ref().map_or(f64::NAN, |t| t.accuracy)
        );
    }

    fn zero_shot_done(&mut self, r: &EpochRecord) {
        eprintln!(
            "zeroshot: valid {:.4}  test {:.4}",
            r.valid.accuracy,
            r.test.as_ref().map_or(f64::NAN, |t| t.accuracy)
        );
    }
}
