//! The GPU context: an adapter picked from the environment, or a device the caller already has.

use std::sync::{Arc, Mutex};

use crate::error::{Error, Result};

/// A wgpu device and queue plus what atrous needs to know about them.
///
/// Build one with [`Gpu::new`] (atrous picks the adapter) or [`Gpu::from_device`] (an application
/// hands in the device it already renders with).
#[derive(Clone)]
pub struct Gpu {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    /// Adapter description, when atrous chose the adapter.
    pub adapter: Option<wgpu::AdapterInfo>,
    /// Set by the device-lost callback (devices atrous opened itself).
    lost: Arc<Mutex<Option<String>>>,
}

/// Environment variables that steer adapter choice.
pub const ENV_BACKEND: &str = "ATROUS_BACKEND";
pub const ENV_ADAPTER: &str = "ATROUS_ADAPTER";

impl Gpu {
    /// Picks an adapter and opens a device on it.
    ///
    /// * Backends: `ATROUS_BACKEND` or else `WGPU_BACKEND` (comma list: `vulkan`, `metal`, `dx12`,
    ///   `gl`, `webgpu`); all native backends by default.
    /// * Adapter: the first whose name contains `ATROUS_ADAPTER` (or `WGPU_ADAPTER_NAME`),
    ///   case-insensitively; by default a discrete GPU, then integrated, then virtual, then CPU.
    ///
    /// The choice is logged (`log::info!`) and kept in [`Gpu::adapter`].
    pub fn new() -> Result<Self> {
        pollster::block_on(Self::new_async())
    }

    /// Like [`Gpu::new`] with the adapter named explicitly (a case-insensitive substring of its
    /// name) instead of through the environment; `None` picks as [`Gpu::new`] does.
    pub fn with_adapter(name: Option<&str>) -> Result<Self> {
        pollster::block_on(Self::open(name.map(str::to_string)))
    }

    pub async fn new_async() -> Result<Self> {
        let wanted = std::env::var(ENV_ADAPTER).or_else(|_| std::env::var("WGPU_ADAPTER_NAME")).ok();
        Self::open(wanted).await
    }

    async fn open(wanted: Option<String>) -> Result<Self> {
        let backends = match std::env::var(ENV_BACKEND).or_else(|_| std::env::var("WGPU_BACKEND")) {
            Ok(s) => wgpu::Backends::from_comma_list(&s),
            Err(_) => wgpu::Backends::all(),
        };
        let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
        desc.backends = backends;
        let instance = wgpu::Instance::new(desc);
        let adapters = instance.enumerate_adapters(backends).await;
        let listed: Vec<String> = adapters.iter().map(|a| describe(&a.get_info())).collect();
        let pick = match &wanted {
            Some(name) => {
                let n = name.to_lowercase();
                adapters
                    .into_iter()
                    .find(|a| a.get_info().name.to_lowercase().contains(&n))
                    .ok_or_else(|| Error::NoAdapter { backends: format!("{backends:?}"), hint: format!("no adapter name contains `{name}` ({ENV_ADAPTER}); found: [{}]", listed.join("; ")) })?
            }
            None => {
                let rank = |t: wgpu::DeviceType| match t {
                    wgpu::DeviceType::DiscreteGpu => 0,
                    wgpu::DeviceType::IntegratedGpu => 1,
                    wgpu::DeviceType::VirtualGpu => 2,
                    wgpu::DeviceType::Other => 3,
                    wgpu::DeviceType::Cpu => 4,
                };
                // Prefer non-GL backends at equal rank: GL lacks compute features we rely on.
                let gl = |a: &wgpu::Adapter| (a.get_info().backend == wgpu::Backend::Gl) as u8;
                adapters.into_iter().min_by_key(|a| (rank(a.get_info().device_type), gl(a))).ok_or_else(|| Error::NoAdapter {
                    backends: format!("{backends:?}"),
                    hint: "install a Vulkan driver (on Debian/Ubuntu without a GPU: `apt-get install mesa-vulkan-drivers libvulkan1` for the lavapipe software adapter) and set WGPU_BACKEND=vulkan".into(),
                })?
            }
        };
        let info = pick.get_info();
        if !pick.get_downlevel_capabilities().flags.contains(wgpu::DownlevelFlags::COMPUTE_SHADERS) {
            return Err(Error::NoAdapter { backends: format!("{backends:?}"), hint: format!("adapter {} has no compute shaders", describe(&info)) });
        }
        // SHADER_F16 where the adapter has it: sessions of f16 precision need it; SUBGROUP for the
        // kernels with a subgroup variant
        let features =
            pick.features() & (wgpu::Features::TIMESTAMP_QUERY | wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS | wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES | wgpu::Features::SHADER_F16 | wgpu::Features::SUBGROUP);
        let (device, queue) = pick
            .request_device(&wgpu::DeviceDescriptor { label: Some("atrous"), required_features: features, required_limits: pick.limits(), ..Default::default() })
            .await
            .map_err(|e| Error::RequestDevice { adapter: describe(&info), reason: e.to_string() })?;
        log::info!("atrous: using adapter {}", describe(&info));
        let lost = Arc::new(Mutex::new(None));
        let flag = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            log::error!("atrous: device lost ({reason:?}): {msg}");
            if let Ok(mut l) = flag.lock() {
                *l = Some(format!("{reason:?}: {msg}"));
            }
        });
        // Errors outside atrous's error scopes are logged rather than panicking the process.
        device.on_uncaptured_error(Arc::new(|e: wgpu::Error| log::error!("atrous: uncaptured GPU error: {e}")));
        Ok(Gpu { device, queue, adapter: Some(info), lost })
    }

    /// Wraps a device the caller already owns (for example the one its renderer uses). Its
    /// device-lost callback and uncaptured-error handler stay the caller's.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue) -> Self {
        Gpu { device, queue, adapter: None, lost: Arc::new(Mutex::new(None)) }
    }

    /// Why the device was lost, once it has been (devices atrous opened).
    pub fn lost(&self) -> Option<String> {
        self.lost.lock().ok().and_then(|l| l.clone())
    }

    /// An error if the device has been lost.
    pub fn check(&self) -> Result<()> {
        match self.lost() {
            Some(reason) => Err(Error::DeviceLost(reason)),
            None => Ok(()),
        }
    }

    /// One line naming the adapter, for logs and reports.
    pub fn describe(&self) -> String {
        match &self.adapter {
            Some(i) => describe(i),
            None => "caller-provided device".into(),
        }
    }

    /// Whether the device can run f16 kernels (`SHADER_F16` enabled on it).
    pub fn has_f16(&self) -> bool {
        self.device.features().contains(wgpu::Features::SHADER_F16)
    }

    /// Whether the device has subgroup operations (kernels with a subgroup variant use it).
    pub fn has_subgroups(&self) -> bool {
        self.device.features().contains(wgpu::Features::SUBGROUP)
    }

    /// Whether the adapter is a CPU (software) one, as far as it is known.
    pub fn is_cpu(&self) -> bool {
        self.adapter.as_ref().is_some_and(|a| a.device_type == wgpu::DeviceType::Cpu)
    }

    pub fn limits(&self) -> wgpu::Limits {
        self.device.limits()
    }

    /// Waits for all submitted work.
    pub fn wait(&self) -> Result<()> {
        self.device.poll(wgpu::PollType::wait_indefinitely()).map(|_| ()).map_err(|e| match self.lost() {
            Some(reason) => Error::DeviceLost(reason),
            None => Error::Gpu { during: "waiting for the device".into(), reason: e.to_string() },
        })
    }
}

fn describe(i: &wgpu::AdapterInfo) -> String {
    format!("{} ({:?}, {:?}, driver {} {})", i.name, i.backend, i.device_type, i.driver, i.driver_info)
}
