//! A restricted unpickler for PyTorch `pytorch_model.bin` checkpoints (zip + pickle).
//!
//! Why our own: a pickle is a program, and running it is how a malicious checkpoint gets code
//! execution. `serde-pickle` cannot resolve torch's persistent storage ids, and burn-store's
//! reader is built to load into burn records rather than to give us a strict allow-list with
//! per-file errors. This VM understands the opcodes `torch.save` emits for a state dict and
//! accepts exactly the globals needed to rebuild tensors; any other global (`os.system`,
//! `builtins.eval`, ...) is an error naming it. Nothing is ever called or imported.

use std::collections::HashMap;
use std::io::Read;
use std::path::Path;

use super::host::{RawTensor, SourceDType, TensorMap, decode_le};
use crate::error::{Error, Result};

/// Globals a state-dict pickle may name.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Global {
    OrderedDict,
    RebuildTensorV2,
    RebuildParameter,
    Storage(SourceDType, usize),
}

fn resolve_global(module: &str, name: &str) -> std::result::Result<Global, String> {
    let g = match (module, name) {
        ("collections", "OrderedDict") => Global::OrderedDict,
        ("torch._utils", "_rebuild_tensor_v2") => Global::RebuildTensorV2,
        ("torch._utils", "_rebuild_parameter") => Global::RebuildParameter,
        ("torch", "FloatStorage") => Global::Storage(SourceDType::F32, 4),
        ("torch", "HalfStorage") => Global::Storage(SourceDType::F16, 2),
        ("torch", "BFloat16Storage") => Global::Storage(SourceDType::BF16, 2),
        ("torch", "DoubleStorage") => Global::Storage(SourceDType::F64, 8),
        ("torch", "LongStorage") => Global::Storage(SourceDType::Int, 8),
        ("torch", "IntStorage") => Global::Storage(SourceDType::Int, 4),
        ("torch", "ShortStorage") => Global::Storage(SourceDType::Int, 2),
        ("torch", "CharStorage" | "ByteStorage" | "BoolStorage") => {
            Global::Storage(SourceDType::Int, 1)
        }
        _ => {
            return Err(format!(
                "pickle refers to global \"{module}.{name}\", which is not allowed \
                 (only torch tensor-rebuild globals are accepted; nothing was executed)"
            ));
        }
    };
    Ok(g)
}

// Scalar payloads are parsed to keep the stack shape right even where they are not used.
#[allow(dead_code)]
#[derive(Debug, Clone)]
enum Value {
    Mark,
    None,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Value>),
    List(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    Global(Global),
    Storage {
        key: String,
        dtype: SourceDType,
        width: usize,
    },
    Tensor(TensorRef),
}

#[derive(Debug, Clone)]
struct TensorRef {
    storage_key: String,
    dtype: SourceDType,
    width: usize,
    offset: usize,
    size: Vec<usize>,
    stride: Vec<usize>,
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Value>,
    memo: HashMap<u32, Value>,
}

type VmResult<T> = std::result::Result<T, String>;

impl<'a> Machine<'a> {
    fn take(&mut self, n: usize) -> VmResult<&'a [u8]> {
        if self.data.len() - self.pos < n {
            return Err(format!(
                "truncated pickle (wanted {n} bytes at offset {})",
                self.pos
            ));
        }
        let s = &self.data[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }
    fn u8(&mut self) -> VmResult<u8> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> VmResult<u16> {
        Ok(u16::from_le_bytes(self.take(2)?.try_into().unwrap()))
    }
    fn u32(&mut self) -> VmResult<u32> {
        Ok(u32::from_le_bytes(self.take(4)?.try_into().unwrap()))
    }
    fn line(&mut self) -> VmResult<String> {
        let rest = &self.data[self.pos..];
        let end = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle (no newline)")?;
        let s = String::from_utf8(rest[..end].to_vec()).map_err(|_| "non-UTF-8 global name")?;
        self.pos += end + 1;
        Ok(s)
    }
    fn pop(&mut self) -> VmResult<Value> {
        self.stack
            .pop()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn pop_mark(&mut self) -> VmResult<Vec<Value>> {
        let at = self
            .stack
            .iter()
            .rposition(|v| matches!(v, Value::Mark))
            .ok_or("pickle MARK missing")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items)
    }
    fn top_mut(&mut self) -> VmResult<&mut Value> {
        self.stack
            .last_mut()
            .ok_or_else(|| "pickle stack underflow".to_string())
    }
    fn memo_put(&mut self, key: u32) -> VmResult<()> {
        let v = self.stack.last().ok_or("pickle stack underflow")?.clone();
        self.memo.insert(key, v);
        Ok(())
    }
    fn memo_get(&mut self, key: u32) -> VmResult<()> {
        let v = self
            .memo
            .get(&key)
            .ok_or_else(|| format!("pickle memo key {key} missing"))?
            .clone();
        self.stack.push(v);
        Ok(())
    }
    fn string(&mut self, n: usize) -> VmResult<Value> {
        let b = self.take(n)?;
        Ok(Value::Str(
            String::from_utf8(b.to_vec()).map_err(|_| "non-UTF-8 string in pickle")?,
        ))
    }

    fn run(mut self) -> VmResult<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    self.u8()?; // PROTO
                }
                0x95 => {
                    self.take(8)?; // FRAME
                }
                b'.' => return self.pop(),
                b'(' => self.stack.push(Value::Mark),
                b'N' => self.stack.push(Value::None),
                0x88 => self.stack.push(Value::Bool(true)),
                0x89 => self.stack.push(Value::Bool(false)),
                b'}' => self.stack.push(Value::Dict(Vec::new())),
                b']' => self.stack.push(Value::List(Vec::new())),
                b')' => self.stack.push(Value::Tuple(Vec::new())),
                b'K' => {
                    let v = self.u8()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'M' => {
                    let v = self.u16()?;
                    self.stack.push(Value::Int(v as i64))
                }
                b'J' => {
                    let v = self.u32()? as i32;
                    self.stack.push(Value::Int(v as i64))
                }
                0x8a => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?;
                    if n > 8 {
                        return Err("pickle LONG1 wider than 64 bits".into());
                    }
                    let mut buf = if b.last().is_some_and(|x| x & 0x80 != 0) {
                        [0xffu8; 8]
                    } else {
                        [0u8; 8]
                    };
                    buf[..n].copy_from_slice(b);
                    self.stack.push(Value::Int(i64::from_le_bytes(buf)))
                }
                b'G' => {
                    let v = f64::from_be_bytes(self.take(8)?.try_into().unwrap());
                    self.stack.push(Value::Float(v))
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                0x8c => {
                    let n = self.u8()? as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                0x8d => {
                    let n = u64::from_le_bytes(self.take(8)?.try_into().unwrap()) as usize;
                    let v = self.string(n)?;
                    self.stack.push(v)
                }
                b'U' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'T' | b'B' => {
                    let n = self.u32()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'C' => {
                    let n = self.u8()? as usize;
                    let b = self.take(n)?.to_vec();
                    self.stack.push(Value::Bytes(b))
                }
                b'q' => {
                    let k = self.u8()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = self.memo.len() as u32;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.u8()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.stack
                        .push(Value::Global(resolve_global(&module, &name)?))
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => {
                            self.stack.push(Value::Global(resolve_global(&m, &n)?))
                        }
                        _ => return Err("STACK_GLOBAL needs two strings".into()),
                    }
                }
                b't' => {
                    let items = self.pop_mark()?;
                    self.stack.push(Value::Tuple(items))
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle stack underflow".into());
                    }
                    let items = self.stack.split_off(self.stack.len() - n);
                    self.stack.push(Value::Tuple(items))
                }
                b'a' => {
                    let v = self.pop()?;
                    match self.top_mut()? {
                        Value::List(l) => l.push(v),
                        _ => return Err("APPEND to a non-list".into()),
                    }
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    match self.top_mut()? {
                        Value::List(l) => l.extend(items),
                        _ => return Err("APPENDS to a non-list".into()),
                    }
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    match self.top_mut()? {
                        Value::Dict(d) => d.push((k, v)),
                        _ => return Err("SETITEM on a non-dict".into()),
                    }
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    if items.len() % 2 != 0 {
                        return Err("SETITEMS with an odd number of items".into());
                    }
                    let mut it = items.into_iter();
                    let mut pairs = Vec::new();
                    while let (Some(k), Some(v)) = (it.next(), it.next()) {
                        pairs.push((k, v));
                    }
                    match self.top_mut()? {
                        Value::Dict(d) => d.extend(pairs),
                        _ => return Err("SETITEMS on a non-dict".into()),
                    }
                }
                b'b' => {
                    // BUILD: object state (e.g. a state dict's `_metadata`); not needed.
                    self.pop()?;
                }
                b'Q' => {
                    let pid = self.pop()?;
                    let storage = persistent_storage(pid)?;
                    self.stack.push(storage)
                }
                b'R' => {
                    let args = self.pop()?;
                    let func = self.pop()?;
                    let v = reduce(func, args)?;
                    self.stack.push(v)
                }
                0x81 => {
                    let args = self.pop()?;
                    let cls = self.pop()?;
                    let v = reduce(cls, args)?;
                    self.stack.push(v)
                }
                0x30 => {
                    self.pop()?; // POP
                }
                0x32 => {
                    let v = self.stack.last().ok_or("pickle stack underflow")?.clone();
                    self.stack.push(v) // DUP
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {} (not a plain state dict)",
                        self.pos - 1
                    ));
                }
            }
        }
    }
}

fn as_int(v: &Value, what: &str) -> VmResult<i64> {
    match v {
        Value::Int(i) => Ok(*i),
        _ => Err(format!("{what}: expected an integer")),
    }
}

fn as_dims(v: &Value, what: &str) -> VmResult<Vec<usize>> {
    match v {
        Value::Tuple(items) | Value::List(items) => items
            .iter()
            .map(|x| {
                let i = as_int(x, what)?;
                usize::try_from(i).map_err(|_| format!("{what}: negative value"))
            })
            .collect(),
        _ => Err(format!("{what}: expected a tuple")),
    }
}

fn persistent_storage(pid: Value) -> VmResult<Value> {
    let Value::Tuple(items) = pid else {
        return Err("persistent id is not a tuple".into());
    };
    match items.as_slice() {
        [
            Value::Str(tag),
            Value::Global(Global::Storage(dtype, width)),
            Value::Str(key),
            _location,
            _numel,
        ] if tag == "storage" => Ok(Value::Storage {
            key: key.clone(),
            dtype: *dtype,
            width: *width,
        }),
        _ => Err("persistent id is not a torch storage reference".into()),
    }
}

fn reduce(func: Value, args: Value) -> VmResult<Value> {
    let Value::Global(g) = func else {
        return Err("REDUCE of a non-callable".into());
    };
    let Value::Tuple(args) = args else {
        return Err("REDUCE arguments are not a tuple".into());
    };
    match g {
        Global::OrderedDict => Ok(Value::Dict(Vec::new())),
        Global::RebuildTensorV2 => {
            if args.len() < 4 {
                return Err("_rebuild_tensor_v2 with too few arguments".into());
            }
            let Value::Storage { key, dtype, width } = &args[0] else {
                return Err("_rebuild_tensor_v2 without a storage".into());
            };
            let offset = usize::try_from(as_int(&args[1], "storage offset")?)
                .map_err(|_| "negative storage offset")?;
            Ok(Value::Tensor(TensorRef {
                storage_key: key.clone(),
                dtype: *dtype,
                width: *width,
                offset,
                size: as_dims(&args[2], "tensor size")?,
                stride: as_dims(&args[3], "tensor stride")?,
            }))
        }
        Global::RebuildParameter => match args.into_iter().next() {
            Some(t @ Value::Tensor(_)) => Ok(t),
            _ => Err("_rebuild_parameter without a tensor".into()),
        },
        Global::Storage(..) => Err("a storage type cannot be called".into()),
    }
}

/// Reads a `torch.save` zip archive holding a state dict.
pub fn read_torch_zip(path: &Path) -> Result<TensorMap> {
    let file = std::fs::File::open(path).map_err(|e| Error::io(path, e))?;
    read_torch_zip_from(file).map_err(|msg| Error::file(path, msg))
}

fn read_torch_zip_from<R: Read + std::io::Seek>(reader: R) -> VmResult<TensorMap> {
    let mut zip = zip::ZipArchive::new(reader).map_err(|e| {
        format!(
            "not a PyTorch zip checkpoint ({e}); legacy non-zip torch.save files are not supported"
        )
    })?;
    let pkl_name = (0..zip.len())
        .filter_map(|i| zip.name_for_index(i).map(str::to_owned))
        .find(|n| n.ends_with("/data.pkl") || n == "data.pkl")
        .ok_or("zip archive has no data.pkl")?;
    let prefix = pkl_name.trim_end_matches("data.pkl").to_owned();
    let mut pkl = Vec::new();
    zip.by_name(&pkl_name)
        .and_then(|mut f| f.read_to_end(&mut pkl).map_err(Into::into))
        .map_err(|e| format!("reading {pkl_name}: {e}"))?;
    if let Ok(mut f) = zip.by_name(&format!("{prefix}byteorder")) {
        let mut s = String::new();
        let _ = f.read_to_string(&mut s);
        if s.trim() == "big" {
            return Err("big-endian checkpoints are not supported".into());
        }
    }
    let machine = Machine {
        data: &pkl,
        pos: 0,
        stack: Vec::new(),
        memo: HashMap::new(),
    };
    let root = machine.run()?;
    let Value::Dict(entries) = root else {
        return Err("the pickle is not a state dict (expected a dict of tensors)".into());
    };
    let mut storages: HashMap<String, Vec<u8>> = HashMap::new();
    let mut out = TensorMap::new();
    for (k, v) in entries {
        let Value::Str(name) = k else {
            return Err("state dict key is not a string".into());
        };
        let t = match v {
            Value::Tensor(t) => t,
            // Non-tensor entries (e.g. metadata) carry no weights.
            _ => continue,
        };
        if !storages.contains_key(&t.storage_key) {
            let entry = format!("{prefix}data/{}", t.storage_key);
            let mut bytes = Vec::new();
            zip.by_name(&entry)
                .and_then(|mut f| f.read_to_end(&mut bytes).map_err(Into::into))
                .map_err(|e| format!("tensor \"{name}\": storage {entry}: {e}"))?;
            storages.insert(t.storage_key.clone(), bytes);
        }
        let bytes = &storages[&t.storage_key];
        let data = gather_strided(bytes, &t).map_err(|e| format!("tensor \"{name}\": {e}"))?;
        out.insert(
            name,
            RawTensor {
                shape: t.size.clone(),
                data,
                dtype: t.dtype,
            },
        );
    }
    Ok(out)
}

/// Copies a strided view of a storage into a dense row-major `f32` vector.
fn gather_strided(bytes: &[u8], t: &TensorRef) -> VmResult<Vec<f32>> {
    if t.size.len() != t.stride.len() {
        return Err("size and stride have different ranks".into());
    }
    let numel_storage = bytes.len() / t.width;
    let numel: usize = t.size.iter().product();
    if numel == 0 {
        return Ok(Vec::new());
    }
    let last = t.offset
        + t.size
            .iter()
            .zip(&t.stride)
            .map(|(s, st)| (s - 1) * st)
            .sum::<usize>();
    if last >= numel_storage {
        return Err(format!(
            "view reaches element {last} of a storage of {numel_storage}"
        ));
    }
    let elems = decode_le(bytes, t.dtype, t.width);
    let contiguous = t.size.iter().rev().scan(1usize, |acc, &s| {
        let st = *acc;
        *acc *= s;
        Some(st)
    });
    let mut expected: Vec<usize> = contiguous.collect();
    expected.reverse();
    if expected == t.stride {
        return Ok(elems[t.offset..t.offset + numel].to_vec());
    }
    let mut out = Vec::with_capacity(numel);
    let mut idx = vec![0usize; t.size.len()];
    for _ in 0..numel {
        let off = t.offset + idx.iter().zip(&t.stride).map(|(i, s)| i * s).sum::<usize>();
        out.push(elems[off]);
        for d in (0..idx.len()).rev() {
            idx[d] += 1;
            if idx[d] < t.size[d] {
                break;
            }
            idx[d] = 0;
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(bytes: &[u8]) -> VmResult<Value> {
        Machine {
            data: bytes,
            pos: 0,
            stack: Vec::new(),
            memo: HashMap::new(),
        }
        .run()
    }

    #[test]
    fn rejects_foreign_globals() {
        // pickle.dumps of os.system("echo hi") at protocol 2, hand-assembled.
        let evil = b"\x80\x02cos\nsystem\nq\x00X\x07\x00\x00\x00echo hiq\x01\x85q\x02Rq\x03.";
        let err = run(evil).unwrap_err();
        assert!(
            err.contains("\"os.system\"") && err.contains("not allowed"),
            "{err}"
        );
        let evil4 = b"\x80\x04\x8c\x08builtins\x8c\x04eval\x93.";
        assert!(run(evil4).unwrap_err().contains("builtins.eval"));
    }

    #[test]
    fn parses_plain_containers() {
        // {"a": (1, 2.5, True)} at protocol 2
        let p = b"\x80\x02}q\x00X\x01\x00\x00\x00aK\x01G@\x04\x00\x00\x00\x00\x00\x00\x88\x87s.";
        match run(p).unwrap() {
            Value::Dict(d) => assert_eq!(d.len(), 1),
            v => panic!("{v:?}"),
        }
        assert!(run(b"\x80\x02}").unwrap_err().contains("truncated"));
        assert!(run(b"\xfe").unwrap_err().contains("opcode"));
    }

    #[test]
    fn strided_views_are_gathered() {
        let bytes: Vec<u8> = (0..6).flat_map(|i| (i as f32).to_le_bytes()).collect();
        let t = TensorRef {
            storage_key: "0".into(),
            dtype: SourceDType::F32,
            width: 4,
            offset: 0,
            size: vec![3, 2],
            stride: vec![1, 3], // transposed 2x3
        };
        assert_eq!(
            gather_strided(&bytes, &t).unwrap(),
            vec![0.0, 3.0, 1.0, 4.0, 2.0, 5.0]
        );
        let out_of_range = TensorRef { offset: 4, ..t };
        assert!(gather_strided(&bytes, &out_of_range).is_err());
    }
}
