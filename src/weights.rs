//! Safetensors weight files: every tensor is checked for presence, shape and dtype when a builder
//! asks for it, and every tensor must be used by the builder, so a file that does not match the
//! architecture fails at load time with the name of the tensor at fault.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

struct Entry {
    dtype: Dtype,
    shape: Vec<usize>,
    start: usize,
    end: usize,
}

/// An opened safetensors file.
pub struct Weights {
    path: PathBuf,
    bytes: Vec<u8>,
    data_start: usize,
    index: HashMap<String, Entry>,
    meta: HashMap<String, String>,
    used: Mutex<HashSet<String>>,
}

impl Weights {
    pub fn open(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
        Self::from_bytes(bytes, path)
    }

    /// Parses and validates a whole file held in memory (`path` only names it in errors).
    pub fn from_bytes(bytes: Vec<u8>, path: impl Into<PathBuf>) -> Result<Self> {
        let path = path.into();
        let corrupt = |reason: String| Error::CorruptWeights { path: path.clone(), reason };
        // `deserialize` validates the header, the offsets and that the data fits the file.
        SafeTensors::deserialize(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let (header_len, metadata) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(e.to_string()))?;
        let data_start = 8 + header_len;
        let mut index = HashMap::new();
        for (name, info) in metadata.tensors() {
            let (start, end) = info.data_offsets;
            index.insert(name, Entry { dtype: info.dtype, shape: info.shape.clone(), start: data_start + start, end: data_start + end });
        }
        let meta = metadata.metadata().clone().unwrap_or_default();
        Ok(Weights { path, bytes, data_start, index, meta, used: Mutex::new(HashSet::new()) })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The `__metadata__` block.
    pub fn metadata(&self) -> &HashMap<String, String> {
        &self.meta
    }

    pub fn has(&self, name: &str) -> bool {
        self.index.contains_key(name)
    }

    pub fn shape(&self, name: &str) -> Option<&[usize]> {
        self.index.get(name).map(|e| e.shape.as_slice())
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.index.keys().map(|s| s.as_str())
    }

    /// Size of the tensor data section.
    pub fn data_bytes(&self) -> usize {
        self.bytes.len() - self.data_start
    }

    /// Shape of `name`, which must exist (it is marked as used).
    pub fn require_shape(&self, name: &str) -> Result<Vec<usize>> {
        let e = self.index.get(name).ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        Ok(e.shape.clone())
    }

    /// The tensor `name` as float32, after checking that it exists with exactly `shape` and a
    /// float dtype and holds only finite values.
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let e = self.index.get(name).ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        if e.shape != shape {
            return Err(Error::ShapeMismatch { name: name.into(), expected: shape.to_vec(), got: e.shape.clone() });
        }
        let v = self.get_any_float(name)?;
        if let Some(index) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::NonFinite { name: name.into(), index });
        }
        Ok(v)
    }

    /// The tensor `name` as float32 whatever its float dtype and shape, non-finite values allowed
    /// (ONNX constants such as a clip bound of -inf); marked as used.
    pub fn get_any_float(&self, name: &str) -> Result<Vec<f32>> {
        let e = self.index.get(name).ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        let raw = &self.bytes[e.start..e.end];
        let v: Vec<f32> = match e.dtype {
            Dtype::F32 => raw.chunks_exact(4).map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]])).collect(),
            Dtype::F16 => raw.chunks_exact(2).map(|b| half::f16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            Dtype::BF16 => raw.chunks_exact(2).map(|b| half::bf16::from_le_bytes([b[0], b[1]]).to_f32()).collect(),
            other => return Err(Error::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}") }),
        };
        self.used.lock().expect("poisoned").insert(name.to_string());
        Ok(v)
    }

    /// The integer tensor `name` (I64, I32 or U8) as i64; marked as used.
    pub fn get_i64(&self, name: &str) -> Result<Vec<i64>> {
        let e = self.index.get(name).ok_or_else(|| Error::MissingTensor { name: name.into() })?;
        let raw = &self.bytes[e.start..e.end];
        let v: Vec<i64> = match e.dtype {
            Dtype::I64 => raw.chunks_exact(8).map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes"))).collect(),
            Dtype::I32 => raw.chunks_exact(4).map(|b| i32::from_le_bytes(b.try_into().expect("4 bytes")) as i64).collect(),
            Dtype::U8 | Dtype::BOOL => raw.iter().map(|&b| b as i64).collect(),
            other => return Err(Error::UnsupportedDtype { name: name.into(), dtype: format!("{other:?}") }),
        };
        self.used.lock().expect("poisoned").insert(name.to_string());
        Ok(v)
    }

    /// Fails if any tensor was never read, except those `ignore` accepts.
    pub fn check_all_used(&self, arch: &str, ignore: impl Fn(&str) -> bool) -> Result<()> {
        let used = self.used.lock().expect("poisoned");
        let mut unused: Vec<&str> = self.index.keys().map(|s| s.as_str()).filter(|n| !used.contains(*n) && !ignore(n)).collect();
        unused.sort();
        match unused.first() {
            None => Ok(()),
            Some(first) => Err(Error::UnexpectedTensors { arch: arch.into(), count: unused.len(), first: first.to_string() }),
        }
    }
}
