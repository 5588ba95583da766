//! Typed errors of the library. The binary wraps them with `anyhow` context.

use std::path::PathBuf;

/// Everything that can go wrong in atrous, each variant naming the thing at fault.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot read {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a valid safetensors file: {reason}")]
    CorruptWeights { path: PathBuf, reason: String },
    #[error("weights: tensor `{name}` is missing")]
    MissingTensor { name: String },
    #[error("weights: tensor `{name}` has shape {got:?}, expected {expected:?}")]
    ShapeMismatch { name: String, expected: Vec<usize>, got: Vec<usize> },
    #[error("weights: tensor `{name}` has dtype {dtype}, expected a float type (F32, F16 or BF16)")]
    UnsupportedDtype { name: String, dtype: String },
    #[error("weights: tensor `{name}` holds a non-finite value at index {index}")]
    NonFinite { name: String, index: usize },
    #[error("node `{node}`: its parameters (after batch-norm and activation folding) hold the non-finite value {value} at index {index}; the weights (a negative running_var, a NaN bn_eps, an overflowing scale?) do not make a finite network")]
    NonFiniteParameter { node: String, index: usize, value: f32 },
    #[error("the model's logits `{output}` are not finite (value {value} at index {index}) on a probe input at session creation: its weights overflow f32 (weights near 3e38?) and every class map would be garbage")]
    NonFiniteLogits { output: String, index: usize, value: f32 },
    #[error("f16 precision needs the SHADER_F16 feature, which adapter `{adapter}` does not have; use f32")]
    F16Unsupported { adapter: String },
    #[error("weights: {count} tensor(s) not used by the {arch} builder, e.g. `{first}`: the file does not match the architecture")]
    UnexpectedTensors { arch: String, count: usize, first: String },
    #[error("model metadata `{key}`: {reason}")]
    Metadata { key: String, reason: String },
    #[error("unknown model architecture: {0}")]
    UnknownArchitecture(String),
    #[error("input size {h}x{w} (HxW) not accepted by {model}: {reason}")]
    InputSize { model: String, h: usize, w: usize, reason: String },
    #[error("invalid operator `{op}`: {reason}")]
    InvalidOp { op: String, reason: String },
    #[error("no GPU adapter found for backends {backends}: {hint}")]
    NoAdapter { backends: String, hint: String },
    #[error("requesting a device from adapter `{adapter}` failed: {reason}")]
    RequestDevice { adapter: String, reason: String },
    #[error("tensor `{name}` needs {bytes} bytes, more than one storage binding allows on this device ({limit} bytes)")]
    TensorTooLarge { name: String, bytes: u64, limit: u64 },
    #[error("the plan needs {bytes} bytes of device memory but at most {limit} bytes are available to it (buffer size limit or ATROUS_MEMORY_BUDGET); use a smaller input")]
    OutOfDeviceMemory { bytes: u64, limit: u64 },
    #[error("the GPU device was lost ({0}); create a new Gpu and sessions to go on")]
    DeviceLost(String),
    #[error("the device ran out of memory while {during} (the plan needs {bytes} bytes of arenas)")]
    DeviceOutOfMemory { during: String, bytes: u64 },
    #[error("GPU error during {during}: {reason}")]
    Gpu { during: String, reason: String },
    #[error("image {path}: {reason}")]
    Image { path: PathBuf, reason: String },
    #[error("input data: {0}")]
    Input(String),
    #[error("{file}: unknown pickle opcode 0x{opcode:02x} ('{}') at byte {offset}", *opcode as char)]
    UnknownPickleOpcode { file: String, opcode: u8, offset: usize },
    #[error("{file}: truncated: {what}")]
    Truncated { file: String, what: String },
    #[error("{file}: {reason}")]
    Checkpoint { file: String, reason: String },
    #[error("{file}: tensor `{name}` has dtype {dtype}; only floating-point tensors are converted")]
    NonFloatTensor { file: String, name: String, dtype: String },
    #[error("{file}: SHA-256 is {got}, the model card says {expected}")]
    HashMismatch { file: String, expected: String, got: String },
    #[error("downloading {url}: {reason}")]
    Download { url: String, reason: String },
    #[error("unknown model `{0}`: not a file, and not a model card name (see `atrous models`)")]
    UnknownModel(String),
    #[error("{path}: not a readable ONNX model: {reason}")]
    OnnxParse { path: PathBuf, reason: String },
    #[error("ONNX node `{node}` ({op}): {reason}")]
    OnnxUnsupported { node: String, op: String, reason: String },
    #[error("ONNX tensor `{tensor}`: {reason}")]
    OnnxTensor { tensor: String, reason: String },
    #[error("the model's graph was written in atrous graph format {found}; this atrous reads format {supported} (convert the ONNX file again with this version)")]
    GraphFormat { found: u32, supported: u32 },
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
    pub(crate) fn op(op: impl Into<String>, reason: impl Into<String>) -> Self {
        Error::InvalidOp { op: op.into(), reason: reason.into() }
    }
}
