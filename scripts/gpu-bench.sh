#!/usr/bin/env bash
# The whole benchmark set in one command, for a run on a GPU machine: every model of ../shared at
# its native size, in f32 (with the workgroup-tiled convolutions the GPU gets by default, and
# without), f16 and f16-compute, through `atrous bench --json` (per-dispatch and per-kernel GPU
# timestamps, end-to-end latency, images/s), gathered into one JSON file.
#
#   scripts/gpu-bench.sh [OUT.json] [ITERS]      (default: gpu-bench.json, 20 iterations)
#   GPU_BENCH_ONLY="espnet_camvid deeplabv3_mnv2" scripts/gpu-bench.sh   (some models only)
#
# A precision the adapter cannot run (f16 without SHADER_F16) is recorded with its error. Set
# WGPU_BACKEND / ATROUS_ADAPTER to choose the GPU; the adapter is recorded.
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:-gpu-bench.json}
iters=${2:-20}
shared=../shared/models
cargo build --release --quiet
bin=target/release/atrous
runs=$(mktemp -d)
trap 'rm -rf "$runs"' EXIT
# model file and native size (WxH)
models=(
  "$shared/espnet_camvid.safetensors 480x360"
  "$shared/espnet_cityscapes.safetensors 1024x512"
  "$shared/espnetv2_s2.0_voc384.safetensors 384x384"
  "$shared/deeplabv3_mnv2_voc257.safetensors 257x257"
  "$shared/enet_camvid.safetensors 512x512"
  "$shared/unet_rbm.safetensors 256x256"
  "$shared/torchvision/deeplabv3_mobilenet_v3_large.safetensors 512x512"
  "$shared/torchvision/lraspp_mobilenet_v3_large.safetensors 520x520"
  "$shared/torchvision/deeplabv3_resnet50.safetensors 520x520"
  "$shared/seeded/fcn8s_vgg16_w8.safetensors 500x500"
  "$shared/seeded/segnet_vgg16bn_w4.safetensors 480x360"
)
i=0
for entry in "${models[@]}"; do
  read -r file size <<<"$entry"
  [ -f "$file" ] || { echo "gpu-bench: $file missing, skipped" >&2; continue; }
  # GPU_BENCH_ONLY="espnet deeplabv3_mnv2": only the models whose file name contains one of these
  if [ -n "${GPU_BENCH_ONLY:-}" ]; then
    keep=no
    for k in $GPU_BENCH_ONLY; do case "$(basename "$file")" in *"$k"*) keep=yes ;; esac; done
    [ $keep = yes ] || continue
  fi
  for config in "f32 auto" "f32 off" "f16 auto" "f16-compute auto"; do
    read -r precision tiles <<<"$config"
    i=$((i + 1))
    echo "gpu-bench: $(basename "$file") $size $precision conv-tiles=$tiles" >&2
    if "$bin" bench --model "$file" --size "$size" --iters "$iters" --precision "$precision" --conv-tiles "$tiles" --json >"$runs/$i.jsonl" 2>"$runs/$i.err"; then
      status=ok
    else
      status=failed
    fi
    printf '%s\n%s\n%s\n%s\n%s\n' "$file" "$size" "$precision" "$status" "$tiles" >"$runs/$i.meta"
  done
done
python3 - "$runs" "$out" <<'PY'
import json, pathlib, platform, subprocess, sys
runs, out = pathlib.Path(sys.argv[1]), sys.argv[2]
results = []
for meta in sorted(runs.glob("*.meta"), key=lambda p: int(p.stem)):
    file, size, precision, status, tiles = meta.read_text().split("\n")[:5]
    lines = [json.loads(l) for l in (runs / f"{meta.stem}.jsonl").read_text().splitlines() if l.strip().startswith("{")]
    err = (runs / f"{meta.stem}.err").read_text()
    results.append({
        "model": pathlib.Path(file).stem, "size": size, "precision": precision, "conv_tiles": tiles, "status": status,
        "records": lines,
        "stderr_tail": err[-2000:] if status != "ok" else "",
        "adapter": next((x["adapter"] for x in lines if "adapter" in x), None),
    })
doc = {"host": platform.node(), "results": results}
pathlib.Path(out).write_text(json.dumps(doc, indent=1))
print(f"gpu-bench: {len(results)} runs written to {out}")
for r in results:
    e2e = next((x for x in r["records"] if "images_per_s" in x), None)
    figures = f"median {e2e['median_ms']:.2f} ms, {e2e['images_per_s']:.1f} images/s, {e2e['device_bytes'] / 2**20:.1f} MiB" if e2e else ""
    print(f"  {r['model']:<40} {r['size']:>9} {r['precision']:<11} tiles={r['conv_tiles']:<4} {r['status']:<6} {figures}")
PY
