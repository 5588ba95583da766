//! atrous: a GPU inference runtime for semantic segmentation on wgpu.
//!
//! A model file (safetensors) is read by a [`models::Model`] builder into a [`graph::Graph`] for
//! one input size; the [`plan::Plan`] orders it and places every tensor in device arenas; a
//! [`session::Session`] owns the buffers, pipelines and bind groups and runs an image in one
//! command submission, reading back only the class map.
//!
//! ```no_run
//! use atrous::{gpu::Gpu, models::Model, session::Session};
//! # fn main() -> atrous::error::Result<()> {
//! let gpu = Gpu::new()?;                        // or Gpu::from_device(device, queue)
//! let model = Model::load("espnet_camvid.safetensors")?;
//! let graph = model.graph(360, 480)?;
//! let mut session = Session::new(&gpu, &graph, model.info.pixel_head())?;
//! let rgb = vec![0u8; 360 * 480 * 3];           // row-major RGB pixels
//! let classes = session.run_rgb(&rgb)?;          // one byte per pixel
//! # Ok(()) }
//! ```

pub mod convert;
pub mod crf;
pub mod error;
pub mod eval;
pub mod gpu;
pub mod graph;
pub mod image_io;
pub mod kernels;
pub mod metrics;
pub mod models;
pub mod onnx;
pub mod ops;
pub mod passes;
pub mod plan;
pub mod preprocess;
pub mod reference;
pub mod regions;
pub mod session;
pub mod shape;
pub mod split;
pub mod weights;
pub mod zoo;

pub use error::{Error, Result};
