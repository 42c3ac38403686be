#!/usr/bin/env bash
# The GPU check: the backend test and both benchmarks under Keras' JAX backend on a lent GPU machine.
#
#   scripts/gpu-check.sh fetch        HERE (with internet): download the wheels the GPU machine lacks into .whl/
#   scripts/gpu-check.sh run          THERE (no internet): install them, nvidia-smi, serving run, backend test, benchmarks
#   scripts/gpu-check.sh run --serving  THERE: install, nvidia-smi and the serving run only (bare bf16/XLA model,
#                                     whole worker, worker/bare, host decode rate): about 2-4 min
#   scripts/gpu-check.sh run --cpu [--serving]  anywhere: the same at tiny sizes on the CPU (proves the script works)
#
# The machine's image (Python 3.12) already has jax, torch, numpy, h5py, rich, pillow, matplotlib, scipy,
# absl-py, ml-dtypes, prometheus-client, pytest...; see /work/.library/device/KINDS.md. Logs go to $OUT
# (the device tool brings back what is there), else to /tmp/gpu-check-out. See docs/gpu-check.md.
set -uo pipefail

REPO="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
WHEELS="$REPO/.whl"
# Runtime packages the image lacks, pinned to what this project is tested with (one version each).
PACKAGES=(
  keras==3.15.1 namex==0.1.0 optree==0.20.0
  pydicom==3.0.2 pydicom-data==1.0.0
  pylibjpeg==2.1.0 pylibjpeg-libjpeg==2.5.0 pylibjpeg-openjpeg==2.6.0 pylibjpeg-rle==2.2.0
  SQLAlchemy==2.1.9 alembic==1.20.1 Mako==1.4.3 structlog==26.1.0
)
PLATFORMS=(manylinux_2_35_x86_64 manylinux_2_34_x86_64 manylinux_2_31_x86_64 manylinux_2_28_x86_64 manylinux_2_24_x86_64 manylinux_2_27_x86_64 manylinux_2_17_x86_64 manylinux2014_x86_64 manylinux1_x86_64)

fetch() {
  mkdir -p "$WHEELS"
  local plats=()
  for p in "${PLATFORMS[@]}"; do plats+=(--platform "$p"); done
  python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    "${plats[@]}" -d "$WHEELS" "${PACKAGES[@]}" || return 1
  du -ch "$WHEELS"/*.whl | tail -1
}

run() {
  local cpu=0 serving_only=0 arg
  for arg in "$@"; do
    case "$arg" in
      --cpu) cpu=1 ;;
      --serving) serving_only=1 ;;
      *) echo "unknown option $arg" >&2; return 2 ;;
    esac
  done
  local out="${OUT:-/tmp/gpu-check-out}"
  mkdir -p "$out"
  cd "$REPO" || return 1
  if [[ $cpu == 0 ]]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$WHEELS"/*.whl >"$out/install.log" 2>&1 || { cat "$out/install.log"; return 1; }
    export PYTHONPATH="/tmp/site:$REPO"
  else
    export PYTHONPATH="$REPO${PYTHONPATH:+:$PYTHONPATH}"
  fi
  export KERAS_BACKEND=jax PYTHONUNBUFFERED=1
  # Benchmarks: 224 px on the GPU; tiny sizes on the CPU, where only the script is being proven.
  local size=224 clf_args=(--batch-sizes 16,32,64 --images 256 --repeats 3 --per-image 16)
  local train_args=(--sizes 224 --images 128 --epochs 2 --batch-size 32)
  local serving_args=(--image-size 224 --batch-sizes 32,64,128 --images 512 --repeats 2)
  if [[ $cpu == 1 ]]; then
    export CUDA_VISIBLE_DEVICES=-1 JAX_PLATFORMS=cpu  # what `--device cpu` sets (classifier/model/device.py)
    size=32 clf_args=(--batch-sizes 4 --images 8 --repeats 1 --per-image 2)
    train_args=(--sizes 32 --images 8 --epochs 1 --batch-size 4)
    serving_args=(--image-size 32 --batch-sizes 4 --images 8 --repeats 1 --decode-workers 2)
  else
    export CUDA_VISIBLE_DEVICES=0  # the worker's `--device gpu:0` (classifier/model/device.py)
  fi
  local rc=0 started=$SECONDS
  step() {  # step NAME COMMAND...: run, log to $out/NAME.log, remember the first failure
    local name=$1; shift
    echo "== $name ($((SECONDS - started)) s)"
    "$@" 2>&1 | tee "$out/$name.log" | tail -25
    local status=${PIPESTATUS[0]}
    echo "== $name exit $status"
    [[ $status == 0 ]] || rc=$status
  }
  {
    echo "python $(python3 -V 2>&1), KERAS_BACKEND=$KERAS_BACKEND, cpu=$cpu, size=$size"
    python3 -c 'import jax, keras; print("jax", jax.__version__, jax.devices(), "keras", keras.__version__)'
  } 2>&1 | tee "$out/env.log"
  [[ $cpu == 1 ]] || step nvidia-smi nvidia-smi
  # First, so its numbers come back even if a later step runs out of time.
  step serving python3 benchmarks/gpu_serving.py --dtype bfloat16 "${serving_args[@]}"
  if [[ $serving_only == 1 ]]; then
    echo "== done in $((SECONDS - started)) s, exit $rc"
    return $rc
  fi
  # TF32 off for the comparison only: JAX and PyTorch round float32 GPU matmuls to TF32 differently
  # by default, which is a precision setting, not backend maths, and would exceed the 1e-4 tolerance.
  step backends env NVIDIA_TF32_OVERRIDE=0 JAX_DEFAULT_MATMUL_PRECISION=highest python3 -m pytest --noconftest -p no:cacheprovider -q -o addopts= tests/integration/test_backends.py
  step classifier-throughput python3 benchmarks/classifier_throughput.py --image-size "$size" "${clf_args[@]}"
  step training-throughput python3 benchmarks/training_throughput.py "${train_args[@]}"
  echo "== done in $((SECONDS - started)) s, exit $rc"
  return $rc
}

case "${1:-}" in
  fetch) fetch ;;
  run) shift; run "$@" ;;
  *) echo "usage: $0 fetch | run [--cpu] [--serving]" >&2; exit 2 ;;
esac
