//! Writing a Hugging Face model directory (`config.json`, `vocab.txt`, `tokenizer_config.json`,
//! weights) that transformers and every ptune command load: `model.safetensors` without the
//! tied decoder keys, or shards with `model.safetensors.index.json`, in f32, f16 or bf16.

use std::path::Path;

use burn::tensor::backend::Backend;

use super::tensors::{StorageDType, safetensors_bytes_as};
use crate::error::{Error, Result, read_file, write_atomic};
use crate::model::bert::BertForMaskedLM;
use crate::model::config::BertConfig;

/// Where and how to write a model directory.
#[derive(Debug, Clone)]
pub struct SaveOptions {
    /// Element type the weights are stored in.
    pub dtype: StorageDType,
    /// Largest shard in bytes; `None` writes one `model.safetensors`.
    pub max_shard_bytes: Option<usize>,
}

impl SaveOptions {
    /// The options behind `--dtype` and `--shard-mib` (0: one file).
    pub fn with_shard_mib(dtype: StorageDType, shard_mib: usize) -> Self {
        SaveOptions {
            dtype,
            max_shard_bytes: (shard_mib > 0).then_some(shard_mib << 20),
        }
    }
}

/// Writes `lm` as a Hugging Face model directory at `out`. The files are written to a
/// temporary sibling directory that then replaces `out`, so `out` is never half-written.
pub fn save_model_dir<B: Backend>(
    lm: &BertForMaskedLM<B>,
    config: &BertConfig,
    vocab_file: &Path,
    lowercase: bool,
    out: &Path,
    opts: &SaveOptions,
) -> Result<()> {
    let tensors = lm.hf_tensors();
    let parent = out
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let name = out
        .file_name()
        .ok_or_else(|| Error::file(out, "not a directory name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = parent.join(format!(".{name}.partial-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&tmp);
    let result = (|| -> Result<()> {
        let config_json = serde_json::to_string_pretty(&config.to_json()).expect("json");
        write_atomic(&tmp.join("config.json"), config_json.as_bytes())?;
        write_atomic(&tmp.join("vocab.txt"), &read_file(vocab_file)?)?;
        let tok =
            serde_json::json!({"do_lower_case": lowercase, "tokenizer_class": "BertTokenizer"});
        write_atomic(
            &tmp.join("tokenizer_config.json"),
            serde_json::to_string_pretty(&tok).expect("json").as_bytes(),
        )?;
        let width = match opts.dtype {
            StorageDType::F32 => 4,
            _ => 2,
        };
        let mut shards: Vec<Vec<usize>> = vec![Vec::new()];
        let mut size = 0usize;
        for (i, (_, t)) in tensors.iter().enumerate() {
            let bytes = t.shape.iter().product::<usize>() * width;
            if let Some(max) = opts.max_shard_bytes
                && size > 0
                && size + bytes > max
            {
                shards.push(Vec::new());
                size = 0;
            }
            shards.last_mut().expect("non-empty").push(i);
            size += bytes;
        }
        let meta = Some(std::collections::HashMap::from([(
            "format".to_string(),
            "pt".to_string(),
        )]));
        let bytes_of = |idx: &[usize]| {
            safetensors_bytes_as(
                idx.iter().map(|&i| {
                    let (k, t) = &tensors[i];
                    (k.clone(), &t.shape[..], &t.data[..])
                }),
                opts.dtype,
                meta.clone(),
            )
        };
        if shards.len() == 1 {
            write_atomic(&tmp.join("model.safetensors"), &bytes_of(&shards[0]))?;
        } else {
            let n = shards.len();
            let mut weight_map = serde_json::Map::new();
            let mut total = 0usize;
            for (k, idx) in shards.iter().enumerate() {
                let file = format!("model-{:05}-of-{n:05}.safetensors", k + 1);
                for &i in idx {
                    let (key, t) = &tensors[i];
                    total += t.shape.iter().product::<usize>() * width;
                    weight_map.insert(key.clone(), file.clone().into());
                }
                write_atomic(&tmp.join(&file), &bytes_of(idx))?;
            }
            let index = serde_json::json!({
                "metadata": {"total_size": total},
                "weight_map": weight_map,
            });
            write_atomic(
                &tmp.join("model.safetensors.index.json"),
                serde_json::to_string_pretty(&index)
                    .expect("json")
                    .as_bytes(),
            )?;
        }
        Ok(())
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_dir_all(&tmp);
        return Err(e);
    }
    let old = parent.join(format!(".{name}.old-{}", std::process::id()));
    if out.exists() {
        std::fs::rename(out, &old).map_err(|e| Error::io(out, e))?;
    }
    std::fs::rename(&tmp, out).map_err(|e| Error::io(out, e))?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Cpu;
    use crate::model::ModelDir;

    /// The shipped model written back in every layout loads with the same weights (f32:
    /// exactly; f16: to f16 rounding), sharded or not.
    #[test]
    fn round_trips_single_sharded_and_half() {
        let src =
            ModelDir::open(&Path::new(env!("CARGO_MANIFEST_DIR")).join("assets/models/zh-mini"))
                .unwrap();
        let lm = src.load::<Cpu>(&Default::default()).unwrap();
        let orig = lm.hf_tensors();
        let tmp = tempfile::tempdir().unwrap();
        for (name, dtype, shard, tol) in [
            ("one", StorageDType::F32, None, 0.0),
            ("sharded", StorageDType::F32, Some(8 << 20), 0.0),
            ("half", StorageDType::F16, Some(16 << 20), 2e-3),
        ] {
            let out = tmp.path().join(name);
            let opts = SaveOptions {
                dtype,
                max_shard_bytes: shard,
            };
            save_model_dir(&lm, &src.config, &src.vocab_file, true, &out, &opts).unwrap();
            let dir = ModelDir::open(&out).unwrap();
            assert_eq!(dir.config, src.config);
            if shard.is_some() {
                assert!(out.join("model.safetensors.index.json").is_file());
                let shards = std::fs::read_dir(&out)
                    .unwrap()
                    .filter(|e| {
                        let n = e
                            .as_ref()
                            .unwrap()
                            .file_name()
                            .to_string_lossy()
                            .into_owned();
                        n.starts_with("model-") && n.ends_with(".safetensors")
                    })
                    .count();
                assert!(shards >= 2, "{name}: {shards} shards");
            }
            let back = dir.load::<Cpu>(&Default::default()).unwrap().hf_tensors();
            assert_eq!(back.len(), orig.len());
            for ((k, t), (k2, t2)) in orig.iter().zip(&back) {
                assert_eq!((k, &t.shape), (k2, &t2.shape));
                let diff = t
                    .data
                    .iter()
                    .zip(&t2.data)
                    .map(|(a, b)| (a - b).abs())
                    .fold(0.0f32, f32::max);
                assert!(diff <= tol, "{name} {k}: {diff}");
            }
        }
        // overwriting an existing directory leaves exactly the new layout
        let out = tmp.path().join("sharded");
        let opts = SaveOptions {
            dtype: StorageDType::F32,
            max_shard_bytes: None,
        };
        save_model_dir(&lm, &src.config, &src.vocab_file, true, &out, &opts).unwrap();
        assert!(!out.join("model.safetensors.index.json").exists());
        assert!(out.join("model.safetensors").is_file());
    }
}
