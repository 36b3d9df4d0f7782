//! Reading and writing checkpoint files as plain `f32` host tensors, without any framework
//! types: `model.safetensors` (single or sharded) through the `safetensors` crate,
//! `pytorch_model.bin` through the restricted unpickler in [`super::pickle`].

use std::path::{Path, PathBuf};

use super::host::decode_le;
pub use super::host::{RawTensor, SourceDType, TensorMap};
use super::pickle::read_torch_zip;
use crate::error::{Error, Result, read_file};

/// Reads every tensor of a `.safetensors` file.
pub fn read_safetensors(path: &Path) -> Result<TensorMap> {
    let bytes = read_file(path)?;
    parse_safetensors(&bytes).map_err(|msg| Error::file(path, msg))
}

pub(crate) fn parse_safetensors(bytes: &[u8]) -> std::result::Result<TensorMap, String> {
    use safetensors::Dtype;
    let st = safetensors::SafeTensors::deserialize(bytes)
        .map_err(|e| format!("not a valid safetensors file: {e}"))?;
    let mut out = TensorMap::new();
    for (name, view) in st.tensors() {
        let (dtype, width) = match view.dtype() {
            Dtype::F32 => (SourceDType::F32, 4),
            Dtype::F16 => (SourceDType::F16, 2),
            Dtype::BF16 => (SourceDType::BF16, 2),
            Dtype::F64 => (SourceDType::F64, 8),
            Dtype::I64 => (SourceDType::Int, 8),
            Dtype::I32 => (SourceDType::Int, 4),
            Dtype::I16 => (SourceDType::Int, 2),
            Dtype::I8 | Dtype::U8 | Dtype::BOOL => (SourceDType::Int, 1),
            other => return Err(format!("tensor \"{name}\" has unsupported dtype {other:?}")),
        };
        let data = decode_le(view.data(), dtype, width);
        if dtype != SourceDType::Int
            && let Some(x) = data.iter().find(|x| !x.is_finite())
        {
            return Err(format!(
                "tensor \"{name}\" has a non-finite value ({x}); refusing to load it"
            ));
        }
        out.insert(
            name,
            RawTensor {
                shape: view.shape().to_vec(),
                data,
                dtype,
            },
        );
    }
    Ok(out)
}

/// The weight file found in a checkpoint directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WeightFormat {
    /// A single `model.safetensors`.
    Safetensors,
    /// `model.safetensors.index.json` naming the shard files (as the Hub writes large models).
    SafetensorsSharded,
    /// `pytorch_model.bin`, a PyTorch zip (pickle) checkpoint.
    PyTorchPickle,
}

/// Picks the weight file of a Hugging Face model directory: `model.safetensors` if present,
/// else `pytorch_model.bin`.
pub fn find_weight_file(dir: &Path) -> Result<(PathBuf, WeightFormat)> {
    let st = dir.join("model.safetensors");
    if st.is_file() {
        return Ok((st, WeightFormat::Safetensors));
    }
    let bin = dir.join("pytorch_model.bin");
    if bin.is_file() {
        return Ok((bin, WeightFormat::PyTorchPickle));
    }
    let index = dir.join("model.safetensors.index.json");
    if index.is_file() {
        return Ok((index, WeightFormat::SafetensorsSharded));
    }
    if dir.join("pytorch_model.bin.index.json").is_file() {
        return Err(Error::file(
            dir,
            "sharded pytorch_model.bin checkpoints are not supported (convert to safetensors)",
        ));
    }
    Err(Error::file(
        dir,
        "no weight file (expected model.safetensors or pytorch_model.bin)",
    ))
}

/// Reads a weight file of either format.
pub fn read_weight_file(path: &Path, format: &WeightFormat) -> Result<TensorMap> {
    match format {
        WeightFormat::Safetensors => read_safetensors(path),
        WeightFormat::SafetensorsSharded => read_sharded(path),
        WeightFormat::PyTorchPickle => read_torch_zip(path),
    }
}

/// Reads the shards a `model.safetensors.index.json` names (its `weight_map`), checking that
/// every listed key is found in its shard and no key is in two shards.
fn read_sharded(index: &Path) -> Result<TensorMap> {
    let v: serde_json::Value = serde_json::from_slice(&read_file(index)?)
        .map_err(|e| Error::file(index, format!("malformed JSON: {e}")))?;
    let map = v
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::file(index, "missing object field \"weight_map\""))?;
    let dir = index.parent().unwrap_or(Path::new("."));
    let mut files: Vec<&str> = Vec::new();
    for (key, file) in map {
        let f = file
            .as_str()
            .filter(|f| !f.contains('/') && !f.contains("..") && !f.is_empty())
            .ok_or_else(|| {
                Error::file(index, format!("weight_map[\"{key}\"] is not a file name"))
            })?;
        if !files.contains(&f) {
            files.push(f);
        }
    }
    let mut out = TensorMap::new();
    for f in files {
        let path = dir.join(f);
        for (k, t) in read_safetensors(&path)? {
            if map.get(&k).and_then(|x| x.as_str()) != Some(f) {
                return Err(Error::file(
                    &path,
                    format!("tensor \"{k}\" is not listed for this shard in the index"),
                ));
            }
            out.insert(k, t);
        }
    }
    if let Some(k) = map.keys().find(|k| !out.contains_key(*k)) {
        return Err(Error::file(
            index,
            format!("tensor \"{k}\" is listed but in no shard"),
        ));
    }
    Ok(out)
}

/// Storage type of written weights.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageDType {
    /// 32-bit float.
    F32,
    /// IEEE half precision (rounded from f32).
    F16,
    /// bfloat16 (rounded from f32).
    Bf16,
}

/// Serialises tensors to safetensors bytes in `dtype` (keys sorted, as the crate writes them).
pub fn safetensors_bytes_as<'a>(
    tensors: impl IntoIterator<Item = (String, &'a [usize], &'a [f32])>,
    dtype: StorageDType,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    let (st_dtype, encode): (safetensors::Dtype, fn(&f32) -> Vec<u8>) = match dtype {
        StorageDType::F32 => (safetensors::Dtype::F32, |x| x.to_le_bytes().to_vec()),
        StorageDType::F16 => (safetensors::Dtype::F16, |x| {
            half::f16::from_f32(*x).to_le_bytes().to_vec()
        }),
        StorageDType::Bf16 => (safetensors::Dtype::BF16, |x| {
            half::bf16::from_f32(*x).to_le_bytes().to_vec()
        }),
    };
    let owned: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .into_iter()
        .map(|(k, s, d)| (k, s.to_vec(), d.iter().flat_map(encode).collect()))
        .collect();
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = owned
        .iter()
        .map(|(k, s, b)| {
            let view = safetensors::tensor::TensorView::new(st_dtype, s.clone(), b)
                .expect("shape matches data length by construction");
            (k.clone(), view)
        })
        .collect();
    safetensors::serialize(views, metadata).expect("serialising in-memory tensors")
}

/// Serialises `f32` tensors to safetensors bytes (keys sorted, as the crate writes them).
pub fn safetensors_bytes<'a>(
    tensors: impl IntoIterator<Item = (String, &'a [usize], &'a [f32])>,
    metadata: Option<std::collections::HashMap<String, String>>,
) -> Vec<u8> {
    safetensors_bytes_as(tensors, StorageDType::F32, metadata)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_and_corruption() {
        let a = [1.0f32, -2.5, 3.25, 0.0];
        let bytes = safetensors_bytes([("w".to_string(), &[2usize, 2][..], &a[..])], None);
        let map = parse_safetensors(&bytes).unwrap();
        assert_eq!(map["w"].shape, vec![2, 2]);
        assert_eq!(map["w"].data, a.to_vec());
        let err = parse_safetensors(&bytes[..bytes.len() - 3]).unwrap_err();
        assert!(err.contains("not a valid safetensors"), "{err}");
        assert!(parse_safetensors(b"garbage").is_err());
        // regression: NaN/inf weights loaded silently and predicted NaN
        for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
            let b = [1.0f32, bad];
            let bytes = safetensors_bytes(
                [("prompt_vectors".to_string(), &[2usize][..], &b[..])],
                None,
            );
            let err = parse_safetensors(&bytes).unwrap_err();
            assert!(
                err.contains("prompt_vectors") && err.contains("non-finite"),
                "{err}"
            );
        }
    }

    #[test]
    fn decodes_half_and_ints() {
        let h: Vec<u8> = [1.5f32, -0.25]
            .iter()
            .flat_map(|x| half::f16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(decode_le(&h, SourceDType::F16, 2), vec![1.5, -0.25]);
        let b: Vec<u8> = [1.5f32]
            .iter()
            .flat_map(|x| half::bf16::from_f32(*x).to_le_bytes())
            .collect();
        assert_eq!(decode_le(&b, SourceDType::BF16, 2), vec![1.5]);
        let i: Vec<u8> = [-3i64, 7].iter().flat_map(|x| x.to_le_bytes()).collect();
        assert_eq!(decode_le(&i, SourceDType::Int, 8), vec![-3.0, 7.0]);
    }
}
