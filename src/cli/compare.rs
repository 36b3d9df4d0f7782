//! `ptune compare`: zero-shot, fine-tuning and P-tuning on the same few-shot split, one table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use ptune::error::{Error, Result, write_atomic};
use ptune::train::plot::{Series, write_curves};
use ptune::train::{Method, Prepared, RunDir, RunSpec, Summary, train_prepared};

use super::train::{MethodArg, RunArgs};
use super::{Job, run_job};

#[derive(clap::Args)]
pub struct Args {
    /// `quick` (about 2 minutes on 2 cores) or `seed` (the full published recipe).
    #[arg(long, default_value = "quick", conflicts_with = "recipe")]
    profile: String,
    /// Methods to run, in order.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "zeroshot,finetune,ptune,ptune-v2"
    )]
    methods: Vec<MethodArg>,
    /// Seeds (each method runs once per seed; the table shows the mean and spread).
    #[arg(long, value_delimiter = ',')]
    seeds: Vec<u64>,
    /// Output directory (default runs/compare-<profile>); one that is not empty is refused
    /// unless --force.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Replace the output directory and everything in it.
    #[arg(long)]
    force: bool,
    #[command(flatten)]
    run: RunArgs,
}

struct CompareJob {
    specs: Vec<RunSpec>,
    quiet: bool,
}

impl Job for CompareJob {
    type Output = Vec<(RunSpec, Summary)>;
    fn run<B: ptune::model::TrainBackend>(self, device: B::Device) -> Result<Self::Output> {
        let mut out = Vec::new();
        let mut reporter = super::progress::reporter(self.quiet);
        for spec in self.specs {
            let prepared = Prepared::load(&spec.config, &spec.model, &spec.data)?;
            if !self.quiet {
                eprintln!(
                    "== {} (seed {}, {} few-shot examples, template \"{}\")",
                    spec.config.method.name(),
                    spec.config.seed,
                    prepared.train.len(),
                    spec.config.template
                );
            }
            let summary = train_prepared::<B>(&spec, &prepared, reporter.as_mut(), &device)?;
            out.push((spec, summary));
        }
        Ok(out)
    }
}

/// The output directory's rule: one that holds anything is replaced only with `--force`.
fn prepare_out_dir(out: &Path, force: bool) -> Result<()> {
    let holds_files = std::fs::read_dir(out).is_ok_and(|mut d| d.next().is_some());
    if holds_files && !force {
        return Err(Error::invalid(format!(
            "{} is not empty: pass --force to replace it",
            out.display()
        )));
    }
    if force {
        let _ = std::fs::remove_dir_all(out);
    }
    Ok(())
}

fn mean_sd(v: &[f64]) -> (f64, f64) {
    let n = v.len() as f64;
    let m = v.iter().sum::<f64>() / n;
    let var = if v.len() > 1 {
        v.iter().map(|x| (x - m).powi(2)).sum::<f64>() / (n - 1.0)
    } else {
        0.0
    };
    (m, var.sqrt())
}

fn fmt_stat(v: &[f64], digits: usize) -> String {
    let (m, sd) = mean_sd(v);
    if v.len() > 1 {
        format!("{m:.digits$} ± {sd:.digits$}")
    } else {
        format!("{m:.digits$}")
    }
}

pub fn run(args: Args) -> Result<()> {
    let methods: Vec<Method> = args.methods.iter().map(|&m| m.into()).collect();
    if methods.is_empty() {
        return Err(Error::invalid("--methods is empty"));
    }
    let profile = args.run.recipe.clone().unwrap_or(args.profile.clone());
    let run_args = RunArgs {
        recipe: Some(profile.clone()),
        ..args.run.clone()
    };
    let model = super::open_model(&run_args.model_path()?)?;
    let out = args.out.clone().unwrap_or_else(|| {
        PathBuf::from(format!("runs/compare-{}", profile.replace(['/', '.'], "_")))
    });
    let data = run_args.data_files()?;
    prepare_out_dir(&out, args.force)?;
    let mut specs = Vec::new();
    for &method in &methods {
        let base = run_args.config(method, &profile)?;
        let seeds = if args.seeds.is_empty() {
            vec![base.seed]
        } else {
            args.seeds.clone()
        };
        // zero-shot has no randomness: one run stands for every seed
        let seeds = if method == Method::Zeroshot {
            vec![seeds[0]]
        } else {
            seeds
        };
        for seed in seeds {
            let mut config = base.clone();
            config.seed = seed;
            let run = RunDir::new(out.join(format!("{}-seed{seed}", method.name())));
            specs.push(run_args.spec(config, model.clone(), data.clone(), run, false));
        }
    }
    let quiet = run_args.quiet;
    let results = run_job(&run_args.backend, CompareJob { specs, quiet })?;

    let mut table = String::new();
    let _ = writeln!(
        table,
        "| method | runs | valid (best) | test @ best valid | macro-F1 @ best valid | best test (seed's column) | trainable params | train ex/s | wall s |"
    );
    let _ = writeln!(table, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
    let mut series = Vec::new();
    let mut json = Vec::new();
    for &method in &methods {
        let rs: Vec<&(RunSpec, Summary)> = results
            .iter()
            .filter(|(s, _)| s.config.method == method)
            .collect();
        let col = |f: fn(&Summary) -> f64| rs.iter().map(|(_, s)| f(s)).collect::<Vec<f64>>();
        let _ = writeln!(
            table,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {:.0} |",
            method.name(),
            rs.len(),
            fmt_stat(&col(|s| s.best_valid), 4),
            fmt_stat(&col(|s| s.test_at_best_valid), 4),
            fmt_stat(&col(|s| s.test_macro_f1_at_best_valid), 4),
            match rs
                .iter()
                .map(|(_, s)| s.best_test)
                .collect::<Option<Vec<f64>>>()
            {
                Some(v) => fmt_stat(&v, 4),
                None => "-".into(),
            },
            rs[0].1.trainable_params,
            if method == Method::Zeroshot {
                "-".into()
            } else {
                format!("{:.1}", mean_sd(&col(|s| s.examples_per_s)).0)
            },
            col(|s| s.wall_seconds).iter().sum::<f64>(),
        );
        for (spec, s) in &rs {
            json.push(serde_json::json!({ "seed": spec.config.seed, "summary": s, "config": spec.config }));
            let history = spec.run.read_metrics()?;
            series.push(Series {
                label: format!("{} seed {} (valid)", method.name(), spec.config.seed),
                points: history
                    .iter()
                    .map(|r| (r.epoch as f64, r.valid.accuracy))
                    .collect(),
            });
        }
    }
    let header = format!(
        "ptune compare — profile `{profile}`, model {}, data {}; model selection on valid\n\n",
        model.dir.display(),
        run_args.data_path()?.display()
    );
    print!("\n{header}{table}");
    write_atomic(
        &out.join("compare.md"),
        format!("{header}{table}").as_bytes(),
    )?;
    write_atomic(
        &out.join("compare.json"),
        serde_json::to_string_pretty(&json)
            .expect("json")
            .as_bytes(),
    )?;
    write_curves(
        &out.join("compare.svg"),
        &format!("valid accuracy per epoch ({profile})"),
        &series,
    )?;
    println!(
        "\noutputs in {} (compare.md, compare.json, compare.svg, one directory per run)",
        out.display()
    );
    Ok(())
}
