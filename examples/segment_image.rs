//! The embedding API in a few lines: atrous's own device, a model file, an image in memory, the
//! class map back.
//!
//! ```sh
//! WGPU_BACKEND=vulkan cargo run --release --example segment_image -- ../shared/models/espnet_camvid.safetensors ../shared/data/camvid/val/images/0016E5_07959.png
//! ```

use atrous::{gpu::Gpu, image_io, models::Model, session::Session};

fn main() -> atrous::Result<()> {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 3 {
        eprintln!("usage: segment_image MODEL.safetensors IMAGE");
        std::process::exit(2);
    }
    let gpu = Gpu::new()?; // or Gpu::from_device(device, queue) with the application's device
    let model = Model::load(&args[1])?;
    let img = image_io::load_rgb(&args[2])?;
    let (h, w) = model.info.run_size(img.h, img.w);
    let input = img.resize(h, w); // a no-op when the model takes the image's size
    let mut session = Session::new(&gpu, &model.graph(h, w)?, model.info.pixel_head())?;
    let classes = session.run_rgb(&input.data)?.resize_nearest(img.h, img.w);
    println!("{} on {}: {}x{} class map", model.info.name, gpu.describe(), classes.w, classes.h);
    for (c, n) in classes.histogram(model.info.classes.len()).iter().enumerate().filter(|(_, n)| **n > 0) {
        println!("{:>14}: {:5.1}% of pixels", model.info.classes[c], 100.0 * *n as f64 / (img.h * img.w) as f64);
    }
    Ok(())
}
