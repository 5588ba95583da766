//! PyTorch checkpoints: the legacy format (`torch.save(..., _use_new_zipfile_serialization=False)`
//! and every file written before PyTorch 1.6) and the current zip format.
//!
//! Legacy: five pickles in a row (magic number, protocol version 1001, system info, the object,
//! the list of storage keys), then each storage in key order as an 8-byte little-endian element
//! count followed by its raw bytes. Zip: `<prefix>/data.pkl` (the object) and one file
//! `<prefix>/data/<key>` per storage. In both, tensors are
//! `torch._utils._rebuild_tensor[_v2](storage, offset, size, stride, ...)` calls whose storage is a
//! persistent id `('storage', torch.<Type>Storage, key, location, numel)`.

use std::collections::HashMap;
use std::io::Read;

use super::pickle::{self, Value};
use crate::error::{Error, Result};

/// A float32 tensor read from a checkpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct Tensor {
    pub name: String,
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// The legacy format's magic number (the low 64 bits of 0x1950a86a20f9469cfc6c).
const LEGACY_MAGIC: i64 = 0xa86a20f9469cfc6c_u64 as i64;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum DType {
    F32,
    F64,
    F16,
    BF16,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl DType {
    fn from_storage(name: &str) -> Option<DType> {
        Some(match name {
            "FloatStorage" => DType::F32,
            "DoubleStorage" => DType::F64,
            "HalfStorage" => DType::F16,
            "BFloat16Storage" => DType::BF16,
            "LongStorage" => DType::I64,
            "IntStorage" => DType::I32,
            "ShortStorage" => DType::I16,
            "CharStorage" => DType::I8,
            "ByteStorage" => DType::U8,
            "BoolStorage" => DType::Bool,
            _ => return None,
        })
    }
    fn size(self) -> usize {
        match self {
            DType::F64 | DType::I64 => 8,
            DType::F32 | DType::I32 => 4,
            DType::F16 | DType::BF16 | DType::I16 => 2,
            DType::I8 | DType::U8 | DType::Bool => 1,
        }
    }
    fn is_float(self) -> bool {
        matches!(self, DType::F32 | DType::F64 | DType::F16 | DType::BF16)
    }
    fn to_f32(self, b: &[u8]) -> f32 {
        match self {
            DType::F32 => f32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            DType::F64 => f64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]) as f32,
            DType::F16 => half::f16::from_le_bytes([b[0], b[1]]).to_f32(),
            DType::BF16 => half::bf16::from_le_bytes([b[0], b[1]]).to_f32(),
            _ => f32::NAN,
        }
    }
}

/// A tensor's description before its storage is read.
struct TensorRef {
    name: String,
    key: String,
    dtype: DType,
    offset: usize,
    shape: Vec<usize>,
    stride: Vec<usize>,
}

/// Reads every floating-point tensor of a checkpoint (either format) in state-dict order.
/// `num_batches_tracked` counters are skipped; any other non-float tensor is an error naming it.
pub fn read_checkpoint(bytes: &[u8], file: &str) -> Result<Vec<Tensor>> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes, file)
    } else {
        read_legacy(bytes, file)
    }
}

fn bad(file: &str, reason: impl Into<String>) -> Error {
    Error::Checkpoint { file: file.to_string(), reason: reason.into() }
}

fn read_legacy(bytes: &[u8], file: &str) -> Result<Vec<Tensor>> {
    let (magic, pos) = pickle::read(bytes, 0, file)?;
    if magic.as_int() != Some(LEGACY_MAGIC) {
        return Err(bad(file, "not a PyTorch checkpoint (no legacy magic number, not a zip archive)"));
    }
    let (proto, pos) = pickle::read(bytes, pos, file)?;
    if proto.as_int() != Some(1001) {
        return Err(bad(file, format!("legacy protocol version {}, expected 1001", proto.brief())));
    }
    let (sys_info, pos) = pickle::read(bytes, pos, file)?;
    if let Value::Dict(d) = sys_info.get() {
        if d.iter().any(|(k, v)| k.as_str() == Some("little_endian") && *v.get() == Value::Bool(false)) {
            return Err(bad(file, "big-endian checkpoints are not supported"));
        }
    }
    let (obj, pos) = pickle::read(bytes, pos, file)?;
    let (keys, mut pos) = pickle::read(bytes, pos, file)?;
    let keys: Vec<String> =
        keys.as_tuple().ok_or_else(|| bad(file, "storage key list missing"))?.iter().map(|k| k.as_str().map(str::to_string).ok_or_else(|| bad(file, "storage key is not a string"))).collect::<Result<_>>()?;
    let (refs, dtype_of) = tensor_refs(&obj, file)?;
    let mut storages: HashMap<String, &[u8]> = HashMap::new();
    for k in &keys {
        if pos + 8 > bytes.len() {
            return Err(Error::Truncated { file: file.into(), what: format!("storage `{k}` header at byte {pos}") });
        }
        let n = i64::from_le_bytes(bytes[pos..pos + 8].try_into().expect("8 bytes"));
        pos += 8;
        let size = dtype_of.get(k).map(|d| d.size()).ok_or_else(|| bad(file, format!("storage `{k}` is used by no tensor")))?;
        // checked before anything is sliced: the count comes from the file
        let len = usize::try_from(n).ok().and_then(|n| n.checked_mul(size)).ok_or_else(|| bad(file, format!("storage `{k}` has an impossible element count {n}")))?;
        if len > bytes.len() - pos {
            return Err(Error::Truncated { file: file.into(), what: format!("storage `{k}` needs {len} bytes at byte {pos}, the file has {}", bytes.len() - pos) });
        }
        storages.insert(k.clone(), &bytes[pos..pos + len]);
        pos += len;
    }
    materialise(refs, &storages, file)
}

fn read_zip(bytes: &[u8], file: &str) -> Result<Vec<Tensor>> {
    let mut z = zip::ZipArchive::new(std::io::Cursor::new(bytes)).map_err(|e| bad(file, format!("zip archive: {e}")))?;
    let names: Vec<String> = z.file_names().map(str::to_string).collect();
    let pkl = names.iter().find(|n| n.ends_with("/data.pkl") || *n == "data.pkl").ok_or_else(|| bad(file, "zip archive without data.pkl"))?.clone();
    let prefix = pkl.trim_end_matches("data.pkl").to_string();
    let read_entry = |z: &mut zip::ZipArchive<std::io::Cursor<&[u8]>>, name: &str| -> Result<Vec<u8>> {
        let f = z.by_name(name).map_err(|e| bad(file, format!("{name}: {e}")))?;
        // no entry may unpack beyond what deflate can expand the archive to (1032:1), nor beyond
        // the size it declares; nothing is allocated before that is known
        let declared = f.size();
        let ceiling = 1032u64.saturating_mul(bytes.len() as u64);
        if declared > ceiling {
            return Err(bad(file, format!("{name}: declares {declared} bytes, more than an archive of {} bytes can hold", bytes.len())));
        }
        let mut v = Vec::new();
        f.take(declared + 1).read_to_end(&mut v).map_err(|e| bad(file, format!("{name}: {e}")))?;
        if v.len() as u64 != declared {
            return Err(bad(file, format!("{name}: holds {} bytes, declares {declared}", v.len())));
        }
        Ok(v)
    };
    let data = read_entry(&mut z, &pkl)?;
    let (obj, _) = pickle::read(&data, 0, file)?;
    let (refs, _) = tensor_refs(&obj, file)?;
    let mut owned: HashMap<String, Vec<u8>> = HashMap::new();
    for r in &refs {
        if !owned.contains_key(&r.key) {
            let v = read_entry(&mut z, &format!("{prefix}data/{}", r.key))?;
            owned.insert(r.key.clone(), v);
        }
    }
    let storages: HashMap<String, &[u8]> = owned.iter().map(|(k, v)| (k.clone(), v.as_slice())).collect();
    materialise(refs, &storages, file)
}

/// The state dict inside a checkpoint object: the object itself, or its `state_dict` / `model`
/// entry.
fn state_dict<'a>(obj: &'a Value, file: &str) -> Result<&'a [(Value, Value)]> {
    let Value::Dict(d) = obj.get() else { return Err(bad(file, "the checkpoint does not hold a dict")) };
    for key in ["state_dict", "model", "model_state_dict"] {
        if let Some((_, v)) = d.iter().find(|(k, _)| k.as_str() == Some(key)) {
            if let Value::Dict(inner) = v.get() {
                return Ok(inner);
            }
        }
    }
    Ok(d)
}

fn ints(v: &Value, what: &str, file: &str) -> Result<Vec<usize>> {
    v.as_tuple().ok_or_else(|| bad(file, format!("{what} is not a tuple")))?.iter().map(|x| x.as_int().filter(|&i| i >= 0).map(|i| i as usize).ok_or_else(|| bad(file, format!("{what} holds a non-integer")))).collect()
}

/// The float tensors to convert, and the element type of every storage (skipped ones too: the
/// legacy format's storages are read one after the other).
fn tensor_refs(obj: &Value, file: &str) -> Result<(Vec<TensorRef>, HashMap<String, DType>)> {
    let mut out = vec![];
    let mut dtypes = HashMap::new();
    for (k, v) in state_dict(obj, file)? {
        let name = k.as_str().ok_or_else(|| bad(file, "a state-dict key is not a string"))?.to_string();
        let Value::Call(f, args) = v.get() else { return Err(bad(file, format!("`{name}` is not a tensor"))) };
        match f.get() {
            Value::Global(m, n) if m == "torch._utils" && (n == "_rebuild_tensor" || n == "_rebuild_tensor_v2") => {}
            Value::Global(m, n) => return Err(bad(file, format!("`{name}` is built by {m}.{n}, which the converter does not understand (quantized or sparse tensor?)"))),
            _ => return Err(bad(file, format!("`{name}` is not a tensor"))),
        }
        if args.len() < 4 {
            return Err(bad(file, format!("`{name}`: {} arguments to _rebuild_tensor", args.len())));
        }
        let Value::PersId(pid) = args[0].get() else { return Err(bad(file, format!("`{name}`: storage is not a persistent id"))) };
        let pid = pid.as_tuple().ok_or_else(|| bad(file, format!("`{name}`: storage id is not a tuple")))?;
        if pid.len() < 3 || pid[0].as_str() != Some("storage") {
            return Err(bad(file, format!("`{name}`: unexpected storage id {}", pid[..].iter().map(Value::brief).collect::<Vec<_>>().join(", "))));
        }
        let dtype = match pid[1].get() {
            Value::Global(m, n) if m == "torch" => DType::from_storage(n).ok_or_else(|| bad(file, format!("`{name}`: unknown storage type torch.{n}")))?,
            other => return Err(bad(file, format!("`{name}`: unknown storage type {}", other.brief()))),
        };
        let key = pid[2].as_str().ok_or_else(|| bad(file, format!("`{name}`: storage key is not a string")))?.to_string();
        let offset = args[1].as_int().filter(|&i| i >= 0).ok_or_else(|| bad(file, format!("`{name}`: bad storage offset")))? as usize;
        let shape = ints(&args[2], &format!("`{name}` size"), file)?;
        let stride = ints(&args[3], &format!("`{name}` stride"), file)?;
        if shape.len() != stride.len() {
            return Err(bad(file, format!("`{name}`: {} sizes and {} strides", shape.len(), stride.len())));
        }
        dtypes.insert(key.clone(), dtype);
        if !dtype.is_float() {
            if name.ends_with("num_batches_tracked") {
                continue;
            }
            return Err(Error::NonFloatTensor { file: file.into(), name, dtype: format!("{dtype:?}") });
        }
        out.push(TensorRef { name, key, dtype, offset, shape, stride });
    }
    Ok((out, dtypes))
}

fn materialise(refs: Vec<TensorRef>, storages: &HashMap<String, &[u8]>, file: &str) -> Result<Vec<Tensor>> {
    refs.into_iter()
        .map(|r| {
            let st = storages.get(&r.key).ok_or_else(|| bad(file, format!("`{}`: storage `{}` missing", r.name, r.key)))?;
            let es = r.dtype.size();
            let available = st.len() / es;
            let overflow = || bad(file, format!("tensor `{}`: size {:?}, stride {:?} and offset {} overflow", r.name, r.shape, r.stride, r.offset));
            let numel = r.shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).ok_or_else(overflow)?;
            if numel == 0 {
                return Ok(Tensor { name: r.name, shape: r.shape, data: vec![] });
            }
            // the last element any index can reach must lie inside the storage
            let reach = r.shape.iter().zip(&r.stride).try_fold(r.offset, |a, (&n, &s)| (n - 1).checked_mul(s).and_then(|x| a.checked_add(x))).ok_or_else(overflow)?;
            if reach >= available {
                return Err(Error::Truncated { file: file.into(), what: format!("tensor `{}` reaches element {reach} of a storage of {available} elements", r.name) });
            }
            // an expanded view (stride 0, overlapping strides) would be materialised larger than the
            // bytes in the file: refused, so a tensor never takes more memory than its storage
            if numel > available {
                return Err(bad(file, format!("tensor `{}` has {numel} elements, more than its storage's {available} (an expanded view); the converter materialises no view larger than its storage", r.name)));
            }
            let mut data = Vec::with_capacity(numel);
            let mut idx = vec![0usize; r.shape.len()];
            for _ in 0..numel {
                // within `reach`, so no overflow
                let e = r.offset + idx.iter().zip(&r.stride).map(|(i, s)| i * s).sum::<usize>();
                data.push(r.dtype.to_f32(&st[e * es..(e + 1) * es]));
                for d in (0..idx.len()).rev() {
                    idx[d] += 1;
                    if idx[d] < r.shape[d] {
                        break;
                    }
                    idx[d] = 0;
                }
            }
            Ok(Tensor { name: r.name, shape: r.shape, data })
        })
        .collect()
}
