//! TFLite flatbuffers: the tables this converter reads are `Model` (subgraphs, buffers),
//! `SubGraph` (tensors) and `Tensor` (shape, type, buffer, name) and `Buffer` (data), read with
//! bounds checks on every offset (no generated code, nothing unchecked).

use crate::error::{Error, Result};

/// A constant tensor of the graph.
#[derive(Clone, Debug, PartialEq)]
pub enum Constant {
    F32 { name: String, shape: Vec<usize>, data: Vec<f32> },
    I32 { name: String, shape: Vec<usize>, data: Vec<i32> },
}

struct Fb<'a> {
    b: &'a [u8],
    file: &'a str,
}

impl<'a> Fb<'a> {
    fn err(&self, what: impl Into<String>) -> Error {
        Error::Truncated { file: self.file.into(), what: what.into() }
    }
    /// `n` bytes at `p`, bounds-checked without overflow.
    fn slice(&self, p: usize, n: usize) -> Option<&'a [u8]> {
        self.b.get(p..p.checked_add(n)?)
    }
    fn u8_at(&self, p: usize) -> Result<u8> {
        self.b.get(p).copied().ok_or_else(|| self.err(format!("byte {p} is past the end")))
    }
    fn u16_at(&self, p: usize) -> Result<u16> {
        let s = self.slice(p, 2).ok_or_else(|| self.err(format!("u16 at {p} is past the end")))?;
        Ok(u16::from_le_bytes([s[0], s[1]]))
    }
    fn u32_at(&self, p: usize) -> Result<u32> {
        let s = self.slice(p, 4).ok_or_else(|| self.err(format!("u32 at {p} is past the end")))?;
        Ok(u32::from_le_bytes([s[0], s[1], s[2], s[3]]))
    }
    fn i32_at(&self, p: usize) -> Result<i32> {
        Ok(self.u32_at(p)? as i32)
    }
    /// Position of field `i` of the table at `t`, if present.
    fn field(&self, t: usize, i: usize) -> Result<Option<usize>> {
        let vt = (t as i64 - self.i32_at(t)? as i64).try_into().map_err(|_| self.err(format!("vtable of table at {t}")))?;
        let vt_len = self.u16_at(vt)? as usize;
        let slot = 4 + 2 * i;
        if slot + 2 > vt_len {
            return Ok(None);
        }
        let off = self.u16_at(vt + slot)? as usize;
        Ok(if off == 0 { None } else { Some(t + off) })
    }
    /// Follows the offset stored at `p`.
    fn deref(&self, p: usize) -> Result<usize> {
        let t = p.checked_add(self.u32_at(p)? as usize).ok_or_else(|| self.err("offset overflow"))?;
        if t >= self.b.len() {
            return Err(self.err(format!("offset at {p} points past the end")));
        }
        Ok(t)
    }
    /// A vector's (length, first element position).
    fn vector(&self, t: usize, i: usize) -> Result<Option<(usize, usize)>> {
        match self.field(t, i)? {
            None => Ok(None),
            Some(p) => {
                let v = self.deref(p)?;
                Ok(Some((self.u32_at(v)? as usize, v + 4)))
            }
        }
    }
    fn string(&self, t: usize, i: usize) -> Result<Option<String>> {
        match self.vector(t, i)? {
            None => Ok(None),
            Some((n, p)) => {
                let s = self.slice(p, n).ok_or_else(|| self.err(format!("string at {p} is past the end")))?;
                Ok(Some(String::from_utf8_lossy(s).into_owned()))
            }
        }
    }
    /// Element `k` of a vector of tables.
    fn table_at(&self, first: usize, k: usize) -> Result<usize> {
        self.deref(first + 4 * k)
    }
}

/// TFLite's TensorType names.
fn type_name(t: u8) -> &'static str {
    match t {
        0 => "FLOAT32",
        1 => "FLOAT16",
        2 => "INT32",
        3 => "UINT8",
        4 => "INT64",
        5 => "STRING",
        6 => "BOOL",
        7 => "INT16",
        9 => "INT8",
        10 => "FLOAT64",
        _ => "other",
    }
}

/// Every constant tensor (one with buffer data) of the first subgraph, in tensor order. FLOAT32 and
/// INT32 constants are returned; any other constant type is an error naming the tensor.
pub fn read_constants(bytes: &[u8], file: &str) -> Result<Vec<Constant>> {
    let fb = Fb { b: bytes, file };
    if bytes.len() < 8 || &bytes[4..8] != b"TFL3" {
        return Err(Error::Checkpoint { file: file.into(), reason: "not a TFLite flatbuffer (no TFL3 identifier)".into() });
    }
    let model = fb.deref(0)?;
    let (nsub, subs) = fb.vector(model, 2)?.ok_or_else(|| fb.err("Model has no subgraphs"))?;
    if nsub == 0 {
        return Err(fb.err("Model has no subgraphs"));
    }
    let (nbuf, bufs) = fb.vector(model, 4)?.unwrap_or((0, 0));
    let sub = fb.table_at(subs, 0)?;
    let (ntens, tens) = fb.vector(sub, 0)?.ok_or_else(|| fb.err("SubGraph has no tensors"))?;
    let mut out = vec![];
    for k in 0..ntens {
        let t = fb.table_at(tens, k)?;
        let name = fb.string(t, 3)?.unwrap_or_else(|| format!("tensor{k}"));
        let ty = match fb.field(t, 1)? {
            Some(p) => fb.u8_at(p)?,
            None => 0,
        };
        let buffer = match fb.field(t, 2)? {
            Some(p) => fb.u32_at(p)? as usize,
            None => 0,
        };
        if buffer == 0 {
            continue;
        }
        if buffer >= nbuf {
            return Err(Error::Checkpoint { file: file.into(), reason: format!("tensor `{name}` names buffer {buffer} of {nbuf}") });
        }
        let b = fb.table_at(bufs, buffer)?;
        let Some((len, data)) = fb.vector(b, 0)? else { continue };
        if len == 0 {
            if fb.field(b, 1)?.is_some() {
                return Err(Error::Checkpoint { file: file.into(), reason: format!("tensor `{name}` keeps its data outside the flatbuffer (offset/size buffers), which the converter does not read") });
            }
            continue;
        }
        let raw = fb.slice(data, len).ok_or_else(|| fb.err(format!("data of tensor `{name}`")))?;
        let shape: Vec<usize> = match fb.vector(t, 0)? {
            Some((n, p)) => (0..n).map(|i| fb.i32_at(p + 4 * i).map(|v| v.max(0) as usize)).collect::<Result<_>>()?,
            None => vec![],
        };
        // dims come from the file: their product must not overflow, and must match the bytes
        let numel = shape.iter().try_fold(1usize, |a, &n| a.checked_mul(n)).and_then(|n| n.checked_mul(4));
        match ty {
            0 | 2 => {
                if numel != Some(raw.len()) {
                    return Err(Error::Checkpoint { file: file.into(), reason: format!("tensor `{name}` has {} bytes for shape {shape:?}", raw.len()) });
                }
                if ty == 0 {
                    out.push(Constant::F32 { name, shape, data: raw.chunks_exact(4).map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() });
                } else {
                    out.push(Constant::I32 { name, shape, data: raw.chunks_exact(4).map(|c| i32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect() });
                }
            }
            other => return Err(Error::NonFloatTensor { file: file.into(), name, dtype: type_name(other).into() }),
        }
    }
    Ok(out)
}
