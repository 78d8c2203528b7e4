#!/usr/bin/env bash
# Checks a GPU machine in one command (docs/scale-out.md), results as files. Parts in order of what they tell:
#   1. pytest -m gpu                       -> pytest_gpu.txt
#   2. the full Fashion-MNIST main job on the card (trainer=gpu, +experiment=fashion_cond_gpu)
#                                          -> fashion/ (the run: metrics.json, samples.png, ...), fashion_wall_seconds.txt
#   3. the MNIST main job on the card (not with --smoke: the suite runs that command's CPU form elsewhere)
#                                          -> mnist/, mnist_wall_seconds.txt
#   4. throughput by precision x batch, then compile x channels_last at bf16 batch 512
#                                          -> throughput_precision/, throughput_compile/ (md + json, row by row)
#
#   scripts/gpu_check.sh [--smoke] [--data DIR] [--deadline SECONDS] [OUT]
#
# OUT: where results go (default: $OUT if set, as on the device machine, else outputs/gpu_check).
# --data: the Fashion-MNIST IDX files (default data/fashion-mnist: copy Debian's
# /usr/share/datasets/fashion-mnist there and carry it to the GPU machine; it cannot download).
# --deadline: seconds the whole script may take (default 540, for a job slot with a 10-minute limit). Each part
# runs under `timeout` with its own cap, cut to what is left, so the last parts shrink first and the
# script ends in time with every finished part's files written.
# --smoke: the same parts sized for a CPU in about a minute (the test suite runs it).
# Every part runs even if an earlier one failed; the exit status is non-zero if any failed.
set -uo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."

smoke=0
data=data/fashion-mnist
deadline=540
while [[ $# -gt 0 ]]; do
  case "$1" in
    --smoke) smoke=1; shift ;;
    --data) data="$2"; shift 2 ;;
    --deadline) deadline="$2"; shift 2 ;;
    -*) echo "unknown option $1 (allowed: --smoke, --data DIR, --deadline SECONDS)" >&2; exit 2 ;;
    *) break ;;
  esac
done
out="${1:-${OUT:-outputs/gpu_check}}"
if [[ ! -d "$data" ]]; then
  echo "--data $data is not a folder with the Fashion-MNIST IDX files" >&2
  exit 2
fi
# shellcheck source=scripts/deadline.sh
source scripts/deadline.sh
deadline_valid --deadline "$deadline" || exit 2
mkdir -p "$out"
deadline_start "$deadline" "$out"

"$PYTHON" - > "$out/device.txt" 2>&1 <<'PY'
import torch
print("torch", torch.__version__, "cuda", torch.version.cuda)
print("device:", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "CPU only")
PY
nvidia-smi > "$out/nvidia-smi.txt" 2>&1 || true

# 1. the gpu tests (they skip cleanly without CUDA)
part pytest_gpu 150 "$PYTHON" -m pytest -m gpu -q -p no:cacheprovider tests/gpu > "$out/pytest_gpu.txt" 2>&1

# 2. the full Fashion-MNIST main job, timed from launch to exit
if [[ $smoke == 1 ]]; then
  run=(model=ae debug=smoke trainer=cpu "+experiment=fashion_cond_gpu" dataset.num_workers=0 model.training.max_steps=null
       diffusion.max_steps=null diffusion.batch_size=64 diffusion.grid.every_n_steps=0 evaluation.n_per_class=6)
else
  run=(model=vqvae trainer=gpu "+experiment=fashion_cond_gpu")
fi
part fashion 300 "$PYTHON" train.py "${run[@]}" "dataset.root=$data" logger=csv "paths.cache_dir=$out/cache" \
  "hydra.run.dir=$out/fashion" > "$out/fashion.log" 2>&1
echo "$LAST_SECONDS" > "$out/fashion_wall_seconds.txt"

# 3. the MNIST main job on the 5,000 bundled digits (what the CPU main job reads offline; no download try)
if [[ $smoke == 0 ]]; then
  part mnist 180 "$PYTHON" train.py model=vqvae +experiment=mnist_cond trainer=gpu dataset.source=bundled logger=csv \
    "paths.cache_dir=$out/cache" "hydra.run.dir=$out/mnist" > "$out/mnist.log" 2>&1
  echo "$LAST_SECONDS" > "$out/mnist_wall_seconds.txt"
fi

# 4. throughput tables (each row is written as soon as it is measured)
if [[ $smoke == 1 ]]; then
  part throughput 120 "$PYTHON" scripts/gpu_throughput.py --smoke --out "$out/throughput_precision" > "$out/throughput.log" 2>&1
else
  part throughput 120 "$PYTHON" scripts/gpu_throughput.py --batches 128 512 1024 --compile no --channels-last no \
    --out "$out/throughput_precision" > "$out/throughput.log" 2>&1
  part throughput_compile 240 "$PYTHON" scripts/gpu_throughput.py --precisions bf16-mixed --batches 512 --compile no yes \
    --channels-last no yes --out "$out/throughput_compile" > "$out/throughput_compile.log" 2>&1
fi

if [[ ${#failed[@]} -gt 0 ]]; then
  echo "failed: ${failed[*]} (see $out/parts.txt, $out/*.txt, $out/*.log)" >&2
  exit 1
fi
echo "gpu_check: all parts passed; results in $out"
