//! `atrous._atrous`: the compiled core of the Python package. The Python layer
//! (`python/atrous/__init__.py`) converts NumPy arrays and Pillow images to and from the raw
//! bytes these functions take; everything else — model resolution, sizes, sessions, the device —
//! is the Rust library's, with the GIL released while the device works.

use std::collections::HashMap;
use std::sync::Arc;

use atrous::gpu::Gpu;
use atrous::image_io::RgbImage;
use atrous::models::{FloatOutput, Model as RsModel};
use atrous::session::{ClassMap, Session as RsSession};
use pyo3::create_exception;
use pyo3::exceptions::PyException;
use pyo3::prelude::*;
use pyo3::types::PyBytes;

create_exception!(_atrous, AtrousError, PyException, "Base class of atrous's errors.");
create_exception!(_atrous, ModelError, AtrousError, "A model file, name or metadata that cannot be used.");
create_exception!(_atrous, ImageError, AtrousError, "An image or tensor that cannot be used (unreadable, wrong shape or size).");
create_exception!(_atrous, DeviceError, AtrousError, "No usable GPU adapter, a lost device, out of device memory, or a GPU error.");

/// The typed error as the Python exception of its kind, with the CLI's message.
fn err(e: atrous::Error) -> PyErr {
    use atrous::Error as E;
    let msg = e.to_string();
    match e {
        E::Image { .. } | E::Input(_) | E::InputSize { .. } => ImageError::new_err(msg),
        E::NoAdapter { .. } | E::RequestDevice { .. } | E::DeviceLost(_) | E::DeviceOutOfMemory { .. } | E::OutOfDeviceMemory { .. } | E::Gpu { .. } | E::TensorTooLarge { .. } | E::F16Unsupported { .. } => {
            DeviceError::new_err(msg)
        }
        _ => ModelError::new_err(msg),
    }
}

/// A model: a safetensors file, or a zoo name (fetched and cached on first use), as `--model`.
#[pyclass(module = "atrous._atrous", frozen)]
struct Model {
    inner: Arc<RsModel>,
}

#[pymethods]
impl Model {
    #[new]
    fn new(py: Python<'_>, path_or_name: String) -> PyResult<Self> {
        let m = py.detach(|| -> atrous::Result<RsModel> {
            // the built-in model needs no file and no network
            if path_or_name == atrous::models::EMBEDDED_NAME && !std::path::Path::new(&path_or_name).exists() {
                return RsModel::embedded();
            }
            let path = atrous::zoo::resolve(&path_or_name, &atrous::zoo::FetchOptions::from_env())?;
            RsModel::load(path)
        });
        Ok(Model { inner: Arc::new(m.map_err(err)?) })
    }
    #[getter]
    fn name(&self) -> String {
        self.inner.info.name.clone()
    }
    #[getter]
    fn architecture(&self) -> String {
        self.inner.info.architecture.clone()
    }
    #[getter]
    fn classes(&self) -> Vec<String> {
        self.inner.info.classes.clone()
    }
    #[getter]
    fn palette(&self) -> Vec<(u8, u8, u8)> {
        self.inner.info.palette.iter().map(|c| (c[0], c[1], c[2])).collect()
    }
    /// `("multiple_of", m)` or `("fixed", (h, w))`.
    #[getter]
    fn size_rule(&self, py: Python<'_>) -> PyResult<Py<PyAny>> {
        Ok(match self.inner.info.size {
            atrous::models::SizeRule::MultipleOf(m) => ("multiple_of", m).into_pyobject(py)?.into_any().unbind(),
            atrous::models::SizeRule::Fixed(h, w) => ("fixed", (h, w)).into_pyobject(py)?.into_any().unbind(),
        })
    }
    /// The (height, width) an image of `h x w` runs at.
    fn input_size(&self, h: usize, w: usize) -> (usize, usize) {
        self.inner.info.run_size(h, w)
    }
    #[getter]
    fn parameters(&self) -> usize {
        self.inner.info.parameters
    }
    /// A session on a device. `size` fixes the run size (else each image runs at the model's
    /// size for it); `precision` is `"f32"`, `"f16"` (feature maps stored as f16, arithmetic
    /// in f32; needs an adapter with SHADER_F16), `"f16-compute"` (the convolutions' arithmetic in
    /// f16 too: faster on GPUs, flips up to ~0.8% of pixels) or `"auto"`; `device` a substring of
    /// the adapter's name; `crf` a dense CRF setting as `atrous segment --crf` takes it (`"deeplab"`, `"default"`, key=value
    /// items): class maps and probabilities are then the CRF's.
    #[pyo3(signature = (size=None, precision="f32", device=None, crf=None))]
    fn session(&self, py: Python<'_>, size: Option<(usize, usize)>, precision: &str, device: Option<String>, crf: Option<String>) -> PyResult<Session> {
        let crf = crf.as_deref().map(atrous::crf::CrfParams::parse).transpose().map_err(err)?;
        if let Some((h, w)) = size {
            if !self.inner.info.size.accepts(h, w) {
                return Err(ImageError::new_err(format!("{} does not accept {h}x{w} (size rule {:?})", self.inner.info.name, self.inner.info.size)));
            }
        }
        let gpu = py.detach(|| Gpu::with_adapter(device.as_deref())).map_err(err)?;
        let precision = atrous::session::Precision::parse(precision, Some(&gpu)).map_err(err)?;
        Ok(Session { model: self.inner.clone(), gpu, size, precision, crf, sessions: HashMap::new() })
    }
    fn __repr__(&self) -> String {
        format!("atrous.Model({:?}: {}, {} classes)", self.inner.info.name, self.inner.info.architecture, self.inner.info.classes.len())
    }
}

/// Sessions of one model on one device, one per run size, built on first use and reused.
#[pyclass(module = "atrous._atrous")]
struct Session {
    model: Arc<RsModel>,
    gpu: Gpu,
    size: Option<(usize, usize)>,
    precision: atrous::session::Precision,
    crf: Option<atrous::crf::CrfParams>,
    sessions: HashMap<(usize, usize), RsSession>,
}

fn image(h: usize, w: usize, rgb: &[u8]) -> atrous::Result<RgbImage> {
    if rgb.len() != h * w * 3 || h == 0 || w == 0 {
        return Err(atrous::Error::Input(format!("an image of {h}x{w} RGB needs {} bytes, got {}", h * w * 3, rgb.len())));
    }
    Ok(RgbImage { h, w, data: rgb.to_vec() })
}

impl Session {
    fn run_size(&self, h: usize, w: usize) -> (usize, usize) {
        self.size.unwrap_or_else(|| self.model.info.run_size(h, w))
    }

    fn session(&mut self, hw: (usize, usize)) -> atrous::Result<&mut RsSession> {
        if !self.sessions.contains_key(&hw) {
            let g = self.model.graph(hw.0, hw.1)?;
            let s = RsSession::with_options(&self.gpu, &g, atrous::session::SessionOptions { normalize: self.model.info.pixel_head(), precision: self.precision, crf: self.crf, ..Default::default() })?;
            self.sessions.insert(hw, s);
        }
        Ok(self.sessions.get_mut(&hw).expect("inserted"))
    }

    /// The image at its run size, then the class map (at the image's size) and, if asked, the
    /// logits or probabilities at the run size.
    fn run(&mut self, img: RgbImage, what: Option<FloatOutput>) -> atrous::Result<Ran> {
        let hw = self.run_size(img.h, img.w);
        let resized = (hw != (img.h, img.w)).then(|| img.resize(hw.0, hw.1));
        let model = self.model.clone();
        let s = self.session(hw)?;
        let (map, extra) = model.info.run_image(s, &resized.as_ref().unwrap_or(&img).data, what)?;
        Ok((map.resize_nearest(img.h, img.w), extra, hw))
    }
}

/// A run's class map (at the image's size), its float output and the run size.
type Ran = (ClassMap, Option<Vec<f32>>, (usize, usize));
/// Class map bytes, float32 bytes and their shape `(c, h, w)`.
type MapAndFloats = (Py<PyBytes>, Py<PyBytes>, (usize, usize, usize));

fn floats(py: Python<'_>, v: &[f32]) -> Py<PyBytes> {
    let b: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    PyBytes::new(py, &b).unbind()
}

#[pymethods]
impl Session {
    /// Class map (bytes, `h*w`, row-major) of an RGB image given as `h x w x 3` bytes.
    fn segment(&mut self, py: Python<'_>, h: usize, w: usize, rgb: &[u8]) -> PyResult<Py<PyBytes>> {
        let img = image(h, w, rgb).map_err(err)?;
        let (map, _, _) = py.detach(|| self.run(img, None)).map_err(err)?;
        Ok(PyBytes::new(py, &map.data).unbind())
    }

    /// Class map, float32 logits (little-endian bytes) and their shape `(c, rh, rw)` (the run size).
    fn logits(&mut self, py: Python<'_>, h: usize, w: usize, rgb: &[u8]) -> PyResult<MapAndFloats> {
        let img = image(h, w, rgb).map_err(err)?;
        let (map, l, (rh, rw)) = py.detach(|| self.run(img, Some(FloatOutput::Logits))).map_err(err)?;
        let l = l.expect("logits");
        Ok((PyBytes::new(py, &map.data).unbind(), floats(py, &l), (l.len() / (rh * rw), rh, rw)))
    }

    /// Like `logits` with per-class probabilities (softmax; the sigmoid for one channel).
    fn probabilities(&mut self, py: Python<'_>, h: usize, w: usize, rgb: &[u8]) -> PyResult<MapAndFloats> {
        let img = image(h, w, rgb).map_err(err)?;
        let (map, p, (rh, rw)) = py.detach(|| self.run(img, Some(FloatOutput::Probabilities))).map_err(err)?;
        let p = p.expect("probabilities");
        Ok((PyBytes::new(py, &map.data).unbind(), floats(py, &p), (p.len() / (rh * rw), rh, rw)))
    }

    /// Class maps of many images `(h, w, rgb bytes)`, in order, through the pipelined path (image
    /// n+1 is submitted before image n's class map is read back) for images of one run size.
    fn segment_batch(&mut self, py: Python<'_>, images: Vec<(usize, usize, Vec<u8>)>) -> PyResult<Vec<Py<PyBytes>>> {
        let maps = py
            .detach(|| -> atrous::Result<Vec<ClassMap>> {
                let imgs: Vec<RgbImage> = images.into_iter().map(|(h, w, b)| image(h, w, &b)).collect::<atrous::Result<_>>()?;
                let mut out: Vec<Option<ClassMap>> = vec![None; imgs.len()];
                let mut by_size: HashMap<(usize, usize), Vec<usize>> = HashMap::new();
                for (i, im) in imgs.iter().enumerate() {
                    by_size.entry(self.run_size(im.h, im.w)).or_default().push(i);
                }
                let head = self.model.info.pixel_head().is_some();
                for (hw, idx) in by_size {
                    if !head {
                        for &i in &idx {
                            out[i] = Some(self.run(imgs[i].clone(), None)?.0);
                        }
                        continue;
                    }
                    let s = self.session(hw)?;
                    let feed = idx.iter().map(|&i| Ok(if (imgs[i].h, imgs[i].w) == hw { imgs[i].data.clone() } else { imgs[i].resize(hw.0, hw.1).data }));
                    let mut first_err = None;
                    s.run_rgb_pipelined(feed, |k, r| match r {
                        Ok(m) => out[idx[k]] = Some(m.resize_nearest(imgs[idx[k]].h, imgs[idx[k]].w)),
                        Err(e) => {
                            first_err.get_or_insert(e);
                        }
                    })?;
                    if let Some(e) = first_err {
                        return Err(e);
                    }
                }
                Ok(out.into_iter().map(|m| m.expect("every image has a result")).collect())
            })
            .map_err(err)?;
        Ok(maps.into_iter().map(|m| PyBytes::new(py, &m.data).unbind()).collect())
    }

    /// The adapter this session runs on.
    #[getter]
    fn device(&self) -> String {
        self.gpu.describe()
    }
}

/// Reads an image file as the CLI does: `(h, w, rgb bytes)`.
#[pyfunction]
fn load_image(py: Python<'_>, path: String) -> PyResult<(usize, usize, Py<PyBytes>)> {
    let img = py.detach(|| atrous::image_io::load_rgb(&path)).map_err(err)?;
    Ok((img.h, img.w, PyBytes::new(py, &img.data).unbind()))
}

/// Writes a class map as an 8-bit palette PNG, as `atrous segment` does (written to a temporary
/// file and renamed).
#[pyfunction]
fn save_palette_png(py: Python<'_>, path: String, h: usize, w: usize, classes: &[u8], palette: Vec<(u8, u8, u8)>) -> PyResult<()> {
    if classes.len() != h * w {
        return Err(ImageError::new_err(format!("a {h}x{w} class map needs {} bytes, got {}", h * w, classes.len())));
    }
    let map = ClassMap { h, w, data: classes.to_vec() };
    let pal: Vec<[u8; 3]> = palette.into_iter().map(|(r, g, b)| [r, g, b]).collect();
    py.detach(|| {
        let p = std::path::Path::new(&path);
        let tmp = p.with_extension(format!("png.{}.tmp", std::process::id()));
        atrous::image_io::save_palette_png(&tmp, &map, &pal)?;
        std::fs::rename(&tmp, p).map_err(|e| atrous::Error::Io { path: p.to_path_buf(), source: e })
    })
    .map_err(err)
}

#[pymodule]
fn _atrous(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Model>()?;
    m.add_class::<Session>()?;
    m.add_function(wrap_pyfunction!(load_image, m)?)?;
    m.add_function(wrap_pyfunction!(save_palette_png, m)?)?;
    let py = m.py();
    m.add("AtrousError", py.get_type::<AtrousError>())?;
    m.add("ModelError", py.get_type::<ModelError>())?;
    m.add("ImageError", py.get_type::<ImageError>())?;
    m.add("DeviceError", py.get_type::<DeviceError>())?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}
