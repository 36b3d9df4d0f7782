//! `ptune predict`: classify texts with an adapter on a backbone.

use std::io::{BufRead, Write};
use std::path::PathBuf;

use ptune::adapter::{Adapter, Backbone};
use ptune::data::{Fields, Format as DataFormat, Labels, parse_records};
use ptune::error::{Error, Result};
use ptune::model::ModelDir;

use super::{BackendArgs, InferJob, run_infer_job};

#[derive(Clone, Copy, Debug, clap::ValueEnum)]
enum Format {
    /// `label<TAB>p(class)...<TAB>text`, with a header line.
    Tsv,
    /// One JSON object per line: text, label, probs, truncated (cut to the adapter's max_len).
    Jsonl,
}

#[derive(clap::Args)]
pub struct Args {
    /// Texts to classify (or use --input).
    texts: Vec<String>,
    /// Model directory, or a Hugging Face Hub name ORG/NAME[@REVISION] (downloaded into the Hub cache).
    /// Default: the shipped zh-mini (see `ptune --help`).
    #[arg(long)]
    model: Option<PathBuf>,
    /// Adapter file written by `ptune export`.
    #[arg(long)]
    adapter: PathBuf,
    /// File of texts: .csv or .jsonl (the text field, see --text-field; labels are not needed),
    /// else one text per line (a TSV row's first column; `-` for stdin).
    #[arg(long)]
    input: Option<PathBuf>,
    #[command(flatten)]
    fields: super::train::FieldArgs,
    #[arg(long, value_enum, default_value = "tsv")]
    format: Format,
    /// Texts per forward pass.
    #[arg(long, default_value_t = 64)]
    batch_size: usize,
    #[command(flatten)]
    backend: BackendArgs,
}

/// Texts (and second texts of a pair): one per argument, one per record of a .csv/.jsonl
/// input, or one per input line.
fn read_texts(args: &Args) -> Result<Vec<(String, Option<String>)>> {
    let Some(input) = &args.input else {
        if args.texts.is_empty() {
            return Err(Error::invalid(
                "no texts: give them as arguments or with --input FILE (- for stdin)",
            ));
        }
        return Ok(args.texts.iter().map(|t| (t.clone(), None)).collect());
    };
    if !args.texts.is_empty() {
        return Err(Error::invalid(
            "give texts either as arguments or with --input, not both",
        ));
    }
    let fields = args.fields.fields()?;
    if input.as_os_str() != "-"
        && let Some(format @ (DataFormat::Csv | DataFormat::Jsonl)) = DataFormat::of(input)
    {
        let pair = fields.text_b.is_some();
        let bytes = ptune::error::read_file(input)?;
        let records = parse_records(input, &bytes, format, &fields, pair, Labels::Optional)?;
        if records.is_empty() {
            return Err(Error::file(input, "no texts"));
        }
        return Ok(records.into_iter().map(|r| (r.text_a, r.text_b)).collect());
    }
    if fields != Fields::default() {
        return Err(Error::invalid(
            "--text-field, --text-b-field and --label-field apply to a .csv or .jsonl --input",
        ));
    }
    let reader: Box<dyn BufRead> = if input.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(std::io::BufReader::new(
            std::fs::File::open(input).map_err(|e| Error::io(input, e))?,
        ))
    };
    let mut texts = Vec::new();
    for (i, line) in reader.split(b'\n').enumerate() {
        let line = line.map_err(|e| Error::io(input, e))?;
        let line =
            String::from_utf8(line).map_err(|_| Error::line(input, i + 1, "not valid UTF-8"))?;
        let line = line.strip_suffix('\r').unwrap_or(&line);
        let text = line.split('\t').next().unwrap_or("");
        if text.trim().is_empty() {
            return Err(Error::line(input, i + 1, "empty text"));
        }
        texts.push((text.to_string(), None));
    }
    if texts.is_empty() {
        return Err(Error::file(input, "no texts"));
    }
    Ok(texts)
}

struct Predict(Args, ModelDir, Adapter, Vec<(String, Option<String>)>);

impl InferJob for Predict {
    type Output = ();
    fn run<B: ptune::model::Kernels>(self, device: B::Device) -> Result<()> {
        let Predict(a, model_dir, adapter, texts) = self;
        let backbone = Backbone::<B>::load(&model_dir, &device)?;
        let task = adapter.attach(&a.adapter, &backbone, &device)?;
        let tokenizer = backbone.tokenizer;
        // a text of nothing but characters the tokenizer drops would be classified on the
        // template alone: refuse it like an empty one
        let tokenless = |t: &str| tokenizer.tokenize(t).is_empty();
        if let Some(i) = texts
            .iter()
            .position(|(a, b)| tokenless(a) || b.as_deref().is_some_and(tokenless))
        {
            let msg = "text has no tokens (only characters the tokenizer drops, such as control characters)";
            return Err(match &a.input {
                // plain text input holds one text per line; a CSV/JSONL record may span lines
                Some(input) => match DataFormat::of(input) {
                    Some(DataFormat::Csv | DataFormat::Jsonl) => {
                        Error::file(input, format!("record {}: {msg}", i + 1))
                    }
                    _ => Error::line(input, i + 1, msg),
                },
                None => Error::invalid(format!("text argument {}: {msg}", i + 1)),
            });
        }
        let inputs: Vec<(&str, Option<&str>)> = texts
            .iter()
            .map(|(a, b)| (a.as_str(), b.as_deref()))
            .collect();
        let preds = task.classify(&tokenizer, &inputs, a.batch_size, &device)?;
        let mut out = std::io::BufWriter::new(std::io::stdout().lock());
        let classes = &task.verbalizer.classes;
        let w = |e: std::io::Error| Error::invalid(format!("writing output: {e}"));
        if let Format::Tsv = a.format {
            let probs: Vec<String> = classes.iter().map(|c| format!("p_{c}")).collect();
            writeln!(out, "label\t{}\ttext", probs.join("\t")).map_err(w)?;
        }
        for ((text, _), p) in texts.iter().zip(preds) {
            match a.format {
                Format::Tsv => {
                    let probs: Vec<String> = p.probs.iter().map(|x| format!("{x:.6}")).collect();
                    writeln!(
                        out,
                        "{}\t{}\t{}",
                        p.label,
                        probs.join("\t"),
                        text.replace(['\t', '\n'], " ")
                    )
                    .map_err(w)?
                }
                Format::Jsonl => {
                    let probs: serde_json::Map<String, serde_json::Value> = classes
                        .iter()
                        .cloned()
                        .zip(p.probs.iter().map(|x| serde_json::json!(x)))
                        .collect();
                    let line = serde_json::json!({
                        "text": text,
                        "label": p.label,
                        "probs": probs,
                        "truncated": p.truncated,
                    });
                    writeln!(out, "{line}").map_err(w)?
                }
            }
        }
        out.flush().map_err(w)
    }
}

pub fn run(args: Args) -> Result<()> {
    let texts = read_texts(&args)?;
    let model = super::open_model(&super::model_or_default(&args.model)?)?;
    let adapter = Adapter::read(&args.adapter)?;
    let backend = args.backend.clone();
    run_infer_job(&backend, Predict(args, model, adapter, texts))
}
