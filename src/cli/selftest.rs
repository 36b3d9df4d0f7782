//! `ptune selftest`: checks this install on a device against committed reference values.

use std::path::PathBuf;

use ptune::error::{Error, Result};
use ptune::model::ModelDir;
use ptune::model::kernels::Precision;
use ptune::selftest::{Check, STEP_REFERENCE, StepResult, compare_step, logits, train_step};

use super::{BackendArgs, Job, run_job};

#[derive(clap::Args)]
pub struct Args {
    /// The shipped zh-mini (the reference values belong to it). Default: see `ptune --help`.
    #[arg(long)]
    model: Option<PathBuf>,
    /// Write this device's training-step result as the new reference (maintainers, on CPU).
    #[arg(long)]
    write_reference: Option<PathBuf>,
    #[command(flatten)]
    backend: BackendArgs,
}

struct SelfTest(ModelDir, Option<PathBuf>);

impl Job for SelfTest {
    type Output = Vec<Check>;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Vec<Check>> {
        let SelfTest(model, write) = self;
        let mut checks = vec![logits::<B::InnerBackend>(&model, &device)?];
        let (step, adam) = train_step::<B>(&model, &device)?;
        if let Some(path) = write {
            let json = serde_json::to_string_pretty(&step).expect("json");
            ptune::error::write_atomic(&path, json.as_bytes())?;
            println!("wrote {}", path.display());
        }
        let reference: StepResult = serde_json::from_str(STEP_REFERENCE)
            .map_err(|e| Error::invalid(format!("selftest: built-in reference: {e}")))?;
        checks.extend(compare_step(&step, &reference)?);
        checks.push(adam);
        Ok(checks)
    }
}

pub fn run(args: Args) -> Result<()> {
    if args.backend.precision != Precision::F32 {
        return Err(Error::invalid(format!(
            "selftest checks the f32 path against its f32 reference values; run it without --precision {}",
            args.backend.precision
        )));
    }
    let model = super::open_model(&super::model_or_default(&args.model)?)?;
    let t0 = std::time::Instant::now();
    let checks = run_job(&args.backend, SelfTest(model, args.write_reference.clone()))?;
    let mut failed = 0;
    for c in &checks {
        println!(
            "{}  {}: {} values, largest difference {:.2e} (tolerance {:.0e})",
            if c.passed() { "PASS" } else { "FAIL" },
            c.name,
            c.compared,
            c.max_abs_diff,
            c.tolerance
        );
        failed += usize::from(!c.passed());
    }
    println!(
        "selftest on {}: {} of {} checks passed in {:.1}s",
        args.backend.device,
        checks.len() - failed,
        checks.len(),
        t0.elapsed().as_secs_f64()
    );
    if failed > 0 && args.write_reference.is_none() {
        return Err(Error::invalid(format!(
            "selftest: {failed} check(s) failed"
        )));
    }
    Ok(())
}
