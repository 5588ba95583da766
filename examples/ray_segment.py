"""Segment a folder of images with N Ray actors and write palette PNGs exactly like `atrous segment`.

    python examples/ray_segment.py --model ../shared/models/espnet_camvid.safetensors \
        --images ../shared/data/camvid/val/images --out out_ray --actors 2

On a Ray cluster with GPU workers: `ray.init(address="auto")` (or RAY_ADDRESS) and `--gpus 1`, so
each actor holds one GPU; throughput then scales with the number of GPUs.
"""

import argparse
import os
import time

import ray

import atrous
import atrous.ray


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--images", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--gpus", type=float, default=0, help="GPUs per actor (1 on a GPU cluster)")
    ap.add_argument("--cpus", type=int, default=None, help="CPUs for a local Ray (default: all)")
    ap.add_argument("--limit", type=int, default=None)
    args = ap.parse_args()
    files = sorted(os.path.join(args.images, f) for f in os.listdir(args.images) if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if args.limit:
        files = files[: args.limit]
    if not ray.is_initialized():
        ray.init(num_cpus=args.cpus, include_dashboard=False, ignore_reinit_error=True)
    os.makedirs(args.out, exist_ok=True)
    palette = atrous.Model(args.model).palette
    t0 = time.time()
    ds = ray.data.from_items([{"path": f} for f in files])
    ds = atrous.ray.segment(ds, model=args.model, concurrency=args.actors, num_gpus=args.gpus, batch_size=4)
    n = 0
    for row in ds.iter_rows():
        stem = os.path.splitext(os.path.basename(row["path"]))[0]
        atrous.save_palette_png(os.path.join(args.out, stem + ".png"), row["classes"], palette)
        n += 1
    dt = time.time() - t0
    print(f"{n} images with {args.actors} actor(s) in {dt:.1f} s: {n / dt:.2f} images/s")


if __name__ == "__main__":
    main()
