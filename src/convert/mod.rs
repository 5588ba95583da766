//! Native converters from the upstream formats of the zoo's models to safetensors: PyTorch
//! checkpoints (the legacy pickle format and the current zip format) and TFLite flatbuffers.

pub mod pickle;
pub mod pytorch;
pub mod tflite;
