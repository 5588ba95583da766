//! ONNX import: a protobuf model file becomes a self-describing atrous model — its weights as
//! safetensors tensors and its graph as versioned JSON in the safetensors metadata (key
//! [`GRAPH_KEY`]) — and [`lower`] turns that graph into an atrous [`crate::graph::Graph`] for one
//! input size, through the same operators and rewrite passes as the hand-written builders.
//!
//! The stored graph is ONNX's own: nodes with their operator type, attributes, input and output
//! names, so a converted file and the `.onnx` it came from lower through one code path and give
//! the same graph. Shape-only subgraphs (`Shape`, `Gather`, `Unsqueeze`, `Concat`, `Cast`, ...)
//! are evaluated on the CPU while lowering, for the input size asked for: `--size` re-infers them.

pub mod lower;
pub mod proto;

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::path::{Component, Path};

use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::weights::Weights;
pub use lower::{lower, Lowered, LoweredOut};
use proto::data_type as dt;

/// The safetensors metadata key holding the graph JSON.
pub const GRAPH_KEY: &str = "atrous_graph";
/// The graph format this version writes and reads.
pub const GRAPH_FORMAT: u32 = 1;

/// An element type of ONNX tensors as the importer keeps them: floats as `f32` values, every
/// integer and boolean type as `i64` values, and the ONNX type beside them.
#[derive(Clone, Debug, PartialEq)]
pub enum CData {
    F(Vec<f32>),
    I(Vec<i64>),
}

/// A constant tensor (an initializer, a `Constant`, or a folded shape computation).
#[derive(Clone, Debug, PartialEq)]
pub struct CTensor {
    pub dims: Vec<usize>,
    /// The ONNX data type (`TensorProto.DataType`).
    pub dtype: i32,
    pub data: CData,
}

impl CTensor {
    pub fn numel(&self) -> usize {
        self.dims.iter().product()
    }
    pub fn floats(dims: Vec<usize>, v: Vec<f32>) -> Self {
        CTensor { dims, dtype: dt::FLOAT, data: CData::F(v) }
    }
    pub fn ints(dims: Vec<usize>, v: Vec<i64>) -> Self {
        CTensor { dims, dtype: dt::INT64, data: CData::I(v) }
    }
    /// The values as f32 (integers converted).
    pub fn f32s(&self) -> Vec<f32> {
        match &self.data {
            CData::F(v) => v.clone(),
            CData::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The values as f32, without a copy where they are floats already.
    pub fn into_f32s(self) -> Vec<f32> {
        match self.data {
            CData::F(v) => v,
            CData::I(v) => v.iter().map(|&x| x as f32).collect(),
        }
    }
    /// The values as i64 (floats truncated toward zero, as ONNX's Cast does).
    pub fn i64s(&self) -> Vec<i64> {
        match &self.data {
            CData::F(v) => v.iter().map(|&x| x as i64).collect(),
            CData::I(v) => v.clone(),
        }
    }
    pub fn is_float(&self) -> bool {
        matches!(self.data, CData::F(_))
    }
}

/// A node attribute.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Attr {
    Int(i64),
    Float(f32),
    Ints(Vec<i64>),
    Floats(Vec<f32>),
    String(String),
    Strings(Vec<String>),
    /// A tensor-valued attribute, stored as the initializer of this name.
    Tensor(String),
}

/// A graph input or output: name, ONNX element type name and dimensions (`None`: symbolic).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrValue {
    pub name: String,
    pub dtype: String,
    pub dims: Option<Vec<Option<i64>>>,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrNode {
    pub name: String,
    pub op: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub domain: String,
    pub inputs: Vec<String>,
    pub outputs: Vec<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub attrs: BTreeMap<String, Attr>,
}

impl IrNode {
    fn attr(&self, k: &str) -> Option<&Attr> {
        self.attrs.get(k)
    }
    pub fn int(&self, k: &str, default: i64) -> Result<i64> {
        match self.attr(k) {
            None => Ok(default),
            Some(Attr::Int(v)) => Ok(*v),
            Some(a) => Err(self.bad(format!("attribute `{k}` is {a:?}, expected an int"))),
        }
    }
    pub fn float(&self, k: &str, default: f32) -> Result<f32> {
        match self.attr(k) {
            None => Ok(default),
            Some(Attr::Float(v)) => Ok(*v),
            Some(a) => Err(self.bad(format!("attribute `{k}` is {a:?}, expected a float"))),
        }
    }
    pub fn ints(&self, k: &str) -> Result<Option<Vec<i64>>> {
        match self.attr(k) {
            None => Ok(None),
            Some(Attr::Ints(v)) => Ok(Some(v.clone())),
            Some(a) => Err(self.bad(format!("attribute `{k}` is {a:?}, expected ints"))),
        }
    }
    pub fn floats(&self, k: &str) -> Result<Option<Vec<f32>>> {
        match self.attr(k) {
            None => Ok(None),
            Some(Attr::Floats(v)) => Ok(Some(v.clone())),
            Some(a) => Err(self.bad(format!("attribute `{k}` is {a:?}, expected floats"))),
        }
    }
    pub fn string(&self, k: &str, default: &str) -> Result<String> {
        match self.attr(k) {
            None => Ok(default.to_string()),
            Some(Attr::String(v)) => Ok(v.clone()),
            Some(a) => Err(self.bad(format!("attribute `{k}` is {a:?}, expected a string"))),
        }
    }
    /// The typed error for this node.
    pub fn bad(&self, reason: impl Into<String>) -> Error {
        Error::OnnxUnsupported { node: self.name.clone(), op: self.op.clone(), reason: reason.into() }
    }
}

/// The graph as stored: ONNX's nodes, the graph's inputs and outputs, the initializers' ONNX
/// types (their values are the file's tensors) and what the model says of its input.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct IrGraph {
    pub format: u32,
    pub opset: i64,
    #[serde(default)]
    pub producer: String,
    pub inputs: Vec<IrValue>,
    pub outputs: Vec<IrValue>,
    pub nodes: Vec<IrNode>,
    /// Initializer name -> ONNX data type.
    pub initializers: BTreeMap<String, i32>,
}

impl IrGraph {
    /// The (height, width) the first input declares, each where fixed (positive, at most
    /// [`crate::models::MAX_SIDE`]).
    pub fn declared_hw(&self) -> (Option<usize>, Option<usize>) {
        let dims = self.inputs.first().and_then(|v| v.dims.clone()).unwrap_or_default();
        let fixed = |i: usize| dims.get(i).copied().flatten().filter(|&d| d > 0 && d as usize <= crate::models::MAX_SIDE).map(|d| d as usize);
        (fixed(2), fixed(3))
    }

    /// The size a graph is loaded and checked at: its declared size, 64 where it is symbolic.
    pub fn check_hw(&self) -> (usize, usize) {
        let (h, w) = self.declared_hw();
        (h.unwrap_or(64), w.unwrap_or(64))
    }
}

/// An imported model: the graph, the initializer values and the model's metadata properties.
pub struct Imported {
    pub graph: IrGraph,
    pub tensors: BTreeMap<String, CTensor>,
    pub metadata: BTreeMap<String, String>,
}

/// Whether `bytes` look like an ONNX model rather than a safetensors file (which starts with an
/// 8-byte little-endian header length followed by `{`).
pub fn looks_like_onnx(bytes: &[u8]) -> bool {
    !(bytes.len() >= 9 && bytes[8] == b'{') && bytes.first() == Some(&0x08)
}

/// Reads an ONNX file; external data is read relative to its folder.
pub fn import_file(path: &Path) -> Result<Imported> {
    let m = decode(&std::fs::read(path).map_err(|e| Error::io(path, e))?, path)?;
    // the file's bytes are gone by now: a large model is held twice at most, not three times
    import_model(m, path, path.parent().or(Some(Path::new("."))))
}

fn decode(bytes: &[u8], path: &Path) -> Result<proto::ModelProto> {
    proto::ModelProto::decode(bytes).map_err(|e| Error::OnnxParse { path: path.to_path_buf(), reason: format!("protobuf: {e}") })
}

/// Decodes an ONNX model. `base` is the folder external data is read from (`None`: external data
/// is an error).
pub fn import_bytes(bytes: &[u8], path: &Path, base: Option<&Path>) -> Result<Imported> {
    import_model(decode(bytes, path)?, path, base)
}

fn import_model(mut m: proto::ModelProto, path: &Path, base: Option<&Path>) -> Result<Imported> {
    let parse = |reason: String| Error::OnnxParse { path: path.to_path_buf(), reason };
    let opset = m.opset_import.iter().find(|o| o.domain.as_deref().unwrap_or("").is_empty() || o.domain.as_deref() == Some("ai.onnx")).and_then(|o| o.version).ok_or_else(|| parse("no ai.onnx opset import".into()))?;
    let g = m.graph.as_mut().ok_or_else(|| parse("no graph".into()))?;
    let mut tensors = BTreeMap::new();
    let mut initializers = BTreeMap::new();
    // each initializer's protobuf bytes are freed as soon as it is converted
    for t in std::mem::take(&mut g.initializer) {
        let name = t.name.clone().unwrap_or_default();
        let v = tensor_from_proto(&t, base)?;
        initializers.insert(name.clone(), v.dtype);
        tensors.insert(name, v);
    }
    let mut nodes = vec![];
    for (i, n) in g.node.iter().enumerate() {
        let op = n.op_type.clone().unwrap_or_default();
        let name = n.name.clone().filter(|s| !s.is_empty()).unwrap_or_else(|| format!("{op}_{i}"));
        let domain = n.domain.clone().unwrap_or_default();
        let mut attrs = BTreeMap::new();
        for a in &n.attribute {
            let an = a.name.clone().unwrap_or_default();
            let bad = |reason: String| Error::OnnxUnsupported { node: name.clone(), op: op.clone(), reason };
            if a.ref_attr_name.as_deref().is_some_and(|s| !s.is_empty()) {
                return Err(bad(format!("attribute `{an}` refers to a function attribute")));
            }
            use proto::attr_type as at;
            let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
            let v = match a.r#type.unwrap_or(0) {
                at::FLOAT => Attr::Float(a.f.unwrap_or(0.0)),
                at::INT => Attr::Int(a.i.unwrap_or(0)),
                at::STRING => Attr::String(text(a.s.as_deref().unwrap_or_default())),
                at::FLOATS => Attr::Floats(a.floats.clone()),
                at::INTS => Attr::Ints(a.ints.clone()),
                at::STRINGS => Attr::Strings(a.strings.iter().map(|s| text(s)).collect()),
                at::TENSOR => {
                    let t = a.t.as_ref().ok_or_else(|| bad(format!("tensor attribute `{an}` has no tensor")))?;
                    let key = format!("{name}:{an}");
                    let v = tensor_from_proto(t, base)?;
                    initializers.insert(key.clone(), v.dtype);
                    tensors.insert(key.clone(), v);
                    Attr::Tensor(key)
                }
                t => return Err(bad(format!("attribute `{an}` of type {t} (graphs, sparse tensors and type protos are not supported)"))),
            };
            attrs.insert(an, v);
        }
        nodes.push(IrNode { name, op, domain, inputs: n.input.clone(), outputs: n.output.clone(), attrs });
    }
    let value = |v: &proto::ValueInfoProto| -> IrValue {
        let tt = v.r#type.as_ref().and_then(|t| t.tensor_type.as_ref());
        IrValue {
            name: v.name.clone().unwrap_or_default(),
            dtype: tt.map_or_else(|| "non-tensor".to_string(), |t| dt::name(t.elem_type.unwrap_or(0))),
            dims: tt.and_then(|t| t.shape.as_ref()).map(|s| s.dim.iter().map(|d| d.dim_value).collect()),
        }
    };
    let inputs = g.input.iter().filter(|v| !initializers.contains_key(v.name.as_deref().unwrap_or(""))).map(value).collect();
    let outputs = g.output.iter().map(value).collect();
    let metadata = m.metadata_props.iter().map(|e| (e.key.clone().unwrap_or_default(), e.value.clone().unwrap_or_default())).collect();
    let producer = format!("{} {}", m.producer_name.clone().unwrap_or_default(), m.producer_version.clone().unwrap_or_default()).trim().to_string();
    Ok(Imported { graph: IrGraph { format: GRAPH_FORMAT, opset, producer, inputs, outputs, nodes, initializers }, tensors, metadata })
}

/// A `TensorProto`'s values: from `raw_data`, the typed fields, or an external file.
pub fn tensor_from_proto(t: &proto::TensorProto, base: Option<&Path>) -> Result<CTensor> {
    let name = t.name.clone().unwrap_or_default();
    let bad = |reason: String| Error::OnnxTensor { tensor: name.clone(), reason };
    let dims: Vec<usize> = t.dims.iter().map(|&d| usize::try_from(d).map_err(|_| bad(format!("negative dimension {d}")))).collect::<Result<_>>()?;
    let n = dims.iter().try_fold(1usize, |a, &d| a.checked_mul(d)).filter(|&n| n <= 1 << 31).ok_or_else(|| bad(format!("{dims:?} has too many elements")))?;
    let dtype = t.data_type.unwrap_or(0);
    let external;
    let raw: Option<&[u8]> = if t.data_location == Some(1) {
        external = read_external(t, base, &name)?;
        Some(&external)
    } else {
        t.raw_data.as_deref()
    };
    let size = match dtype {
        dt::FLOAT | dt::INT32 | dt::UINT32 => 4,
        dt::INT64 | dt::UINT64 | dt::DOUBLE => 8,
        dt::FLOAT16 | dt::INT16 | dt::UINT16 => 2,
        dt::INT8 | dt::UINT8 | dt::BOOL => 1,
        _ => return Err(bad(format!("element type {} is not supported", dt::name(dtype)))),
    };
    let data = if let Some(raw) = raw {
        if raw.len() != n * size {
            return Err(bad(format!("{} bytes of data for {dims:?} {} ({} expected)", raw.len(), dt::name(dtype), n * size)));
        }
        let w = |i: usize| &raw[i * size..(i + 1) * size];
        match dtype {
            dt::FLOAT => CData::F((0..n).map(|i| f32::from_le_bytes(w(i).try_into().unwrap())).collect()),
            dt::DOUBLE => CData::F((0..n).map(|i| f64::from_le_bytes(w(i).try_into().unwrap()) as f32).collect()),
            dt::FLOAT16 => CData::F((0..n).map(|i| half::f16::from_le_bytes(w(i).try_into().unwrap()).to_f32()).collect()),
            dt::INT64 => CData::I((0..n).map(|i| i64::from_le_bytes(w(i).try_into().unwrap())).collect()),
            dt::UINT64 => CData::I((0..n).map(|i| u64::from_le_bytes(w(i).try_into().unwrap()) as i64).collect()),
            dt::INT32 => CData::I((0..n).map(|i| i32::from_le_bytes(w(i).try_into().unwrap()) as i64).collect()),
            dt::UINT32 => CData::I((0..n).map(|i| u32::from_le_bytes(w(i).try_into().unwrap()) as i64).collect()),
            dt::INT16 => CData::I((0..n).map(|i| i16::from_le_bytes(w(i).try_into().unwrap()) as i64).collect()),
            dt::UINT16 => CData::I((0..n).map(|i| u16::from_le_bytes(w(i).try_into().unwrap()) as i64).collect()),
            dt::INT8 => CData::I(raw.iter().map(|&b| b as i8 as i64).collect()),
            _ => CData::I(raw.iter().map(|&b| b as i64).collect()),
        }
    } else {
        let data = match dtype {
            dt::FLOAT => CData::F(t.float_data.clone()),
            dt::DOUBLE => CData::F(t.double_data.iter().map(|&v| v as f32).collect()),
            // FLOAT16 values travel as their bit patterns in int32_data
            dt::FLOAT16 => CData::F(t.int32_data.iter().map(|&v| half::f16::from_bits(v as u16).to_f32()).collect()),
            dt::INT64 => CData::I(t.int64_data.clone()),
            dt::UINT64 | dt::UINT32 => CData::I(t.uint64_data.iter().map(|&v| v as i64).collect()),
            _ => CData::I(t.int32_data.iter().map(|&v| v as i64).collect()),
        };
        let len = data_len(&data);
        if len != n {
            return Err(bad(format!("{len} values for {dims:?}")));
        }
        data
    };
    Ok(CTensor { dims, dtype, data })
}

/// The bytes of an externally stored tensor: `location` relative to `base` (no absolute paths,
/// no `..`), `offset` and `length` checked against the file.
fn read_external(t: &proto::TensorProto, base: Option<&Path>, name: &str) -> Result<Vec<u8>> {
    let bad = |reason: String| Error::OnnxTensor { tensor: name.to_string(), reason };
    let get = |k: &str| t.external_data.iter().find(|e| e.key.as_deref() == Some(k)).and_then(|e| e.value.clone());
    let location = get("location").ok_or_else(|| bad("external data without a `location`".into()))?;
    let rel = Path::new(&location);
    if rel.components().any(|c| !matches!(c, Component::Normal(_) | Component::CurDir)) {
        return Err(bad(format!("external data location `{location}` must be a relative path inside the model's folder")));
    }
    let base = base.ok_or_else(|| bad(format!("external data in `{location}`, but the model was not read from a file")))?;
    let path = base.join(rel);
    let num = |k: &str| -> Result<Option<u64>> { get(k).map(|v| v.trim().parse::<u64>().map_err(|e| bad(format!("external data `{k}` = `{v}`: {e}")))).transpose() };
    let offset = num("offset")?.unwrap_or(0);
    let mut f = std::fs::File::open(&path).map_err(|e| bad(format!("external data file {}: {e}", path.display())))?;
    let file_len = f.metadata().map_err(|e| Error::io(&path, e))?.len();
    let length = match num("length")? {
        Some(l) => l,
        None => file_len.saturating_sub(offset),
    };
    if offset.checked_add(length).is_none_or(|end| end > file_len) {
        return Err(bad(format!("external data {}+{} bytes outside {} ({} bytes)", offset, length, path.display(), file_len)));
    }
    let mut buf = vec![0u8; length as usize];
    f.seek(SeekFrom::Start(offset)).and_then(|_| f.read_exact(&mut buf)).map_err(|e| Error::io(&path, e))?;
    Ok(buf)
}

impl Imported {
    /// The self-describing safetensors file: every initializer as a tensor (floats as F32, or
    /// F16 when ONNX stored them so; integers as I64), the graph JSON under [`GRAPH_KEY`], and
    /// the ONNX metadata properties (`input`, `classes`, `source`, ...) as they are.
    pub fn to_safetensors(&self) -> Result<Vec<u8>> {
        use safetensors::tensor::TensorView;
        use safetensors::Dtype;
        use std::borrow::Cow;
        // f32 data is viewed in place; only f16 and i64 are converted
        let bufs: Vec<(Dtype, Cow<'_, [u8]>)> = self
            .tensors
            .values()
            .map(|t| match &t.data {
                CData::F(v) if t.dtype == dt::FLOAT16 => (Dtype::F16, Cow::Owned(v.iter().flat_map(|&x| half::f16::from_f32(x).to_le_bytes()).collect())),
                CData::F(v) => (Dtype::F32, Cow::Borrowed(bytemuck::cast_slice(v))),
                CData::I(v) => (Dtype::I64, Cow::Owned(v.iter().flat_map(|x| x.to_le_bytes()).collect())),
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = self
            .tensors
            .iter()
            .zip(&bufs)
            .map(|((n, t), (d, b))| TensorView::new(*d, t.dims.clone(), b.as_ref()).map(|v| (n.clone(), v)))
            .collect::<Result<_, _>>()
            .map_err(|e| Error::OnnxTensor { tensor: "?".into(), reason: e.to_string() })?;
        let mut meta: std::collections::HashMap<String, String> = self.metadata.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        meta.insert(GRAPH_KEY.into(), serde_json::to_string(&self.graph).expect("graph JSON"));
        meta.entry("architecture".into()).or_insert_with(|| "onnx".into());
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::OnnxTensor { tensor: "?".into(), reason: e.to_string() })
    }
}

/// The stored graph of a weights file, if it has one. A graph of another format version is a
/// [`Error::GraphFormat`].
pub fn stored_graph(w: &Weights) -> Result<Option<IrGraph>> {
    let Some(text) = w.metadata().get(GRAPH_KEY) else { return Ok(None) };
    let v: serde_json::Value = serde_json::from_str(text).map_err(|e| Error::Metadata { key: GRAPH_KEY.into(), reason: e.to_string() })?;
    let found = v.get("format").and_then(|f| f.as_u64()).ok_or_else(|| Error::Metadata { key: GRAPH_KEY.into(), reason: "no `format` number".into() })?;
    if found != GRAPH_FORMAT as u64 {
        return Err(Error::GraphFormat { found: found.min(u32::MAX as u64) as u32, supported: GRAPH_FORMAT });
    }
    let g: IrGraph = serde_json::from_value(v).map_err(|e| Error::Metadata { key: GRAPH_KEY.into(), reason: e.to_string() })?;
    Ok(Some(g))
}

fn data_len(d: &CData) -> usize {
    match d {
        CData::F(v) => v.len(),
        CData::I(v) => v.len(),
    }
}

/// An initializer of a stored graph, read from the weights file (checked against the graph's
/// recorded ONNX type).
pub fn stored_tensor(w: &Weights, name: &str, dtype: i32) -> Result<CTensor> {
    let dims = w.require_shape(name)?.to_vec();
    let data = match dtype {
        dt::FLOAT | dt::FLOAT16 | dt::DOUBLE => CData::F(w.get_any_float(name)?),
        _ => CData::I(w.get_i64(name)?),
    };
    if data_len(&data) != dims.iter().product::<usize>() {
        return Err(Error::OnnxTensor { tensor: name.to_string(), reason: format!("{} values for shape {dims:?}", data_len(&data)) });
    }
    Ok(CTensor { dims, dtype, data })
}
