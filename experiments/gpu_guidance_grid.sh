#!/usr/bin/env bash
# Screen sampler settings for the main job on a GPU, where a run takes a minute instead of eight:
#   1. the MNIST main job (the CPU recipe unchanged, `trainer=gpu trainer.precision=32-true`) for
#      each seed                                  -> mnist_s<seed>/, train_s<seed>_wall_seconds.txt
#   2. `evaluate.py -m` on each checkpoint over guidance s x autoguidance w (1,000 samples per point,
#      the seed-0 split as reference, as the CPU lever sweeps)       -> grid_s<seed>/summary.csv
#   3. with time left: the same job with other guide snapshots (diffusion.guide_at), scored by
#      the end-of-training evaluation at the default setting          -> guide<at>_s<seed>/metrics.json
#
#   experiments/gpu_guidance_grid.sh [OUT]   (env: SEEDS="0 1", SCALES=1.75,2,2.25,2.5, AUTO=2,3,4,
#                                          GUIDE_AT="0.15 0.4", DEADLINE=520 seconds for the whole script,
#                                          TRAIN="" overrides added to every training run, e.g.
#                                          TRAIN="diffusion.max_steps=1040"; GUIDE_AT="" skips part 3)
#
# Every part runs even if an earlier one failed; the exit status is 1 if any failed or was skipped.
# The quality of a 520-step model does not depend on the card, only its time does, so this picks
# what the CPU should confirm; the quality targets are judged on CPU runs.
set -uo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
out="${1:-${OUT:-outputs/gpu_guidance_grid}}"
seeds="${SEEDS:-0 1}"
scales="${SCALES:-1.75,2,2.25,2.5}"
auto="${AUTO:-2,3,4}"
guide_at="${GUIDE_AT-0.15 0.4}"
deadline="${DEADLINE:-520}"
read -r -a train_extra <<< "${TRAIN:-}"
# shellcheck source=scripts/deadline.sh
source scripts/deadline.sh
deadline_valid DEADLINE "$deadline" || exit 2
mkdir -p "$out"
deadline_start "$deadline" "$out"
common=(model=vqvae +experiment=mnist_cond trainer=gpu trainer.precision=32-true dataset.source=bundled
  logger=csv "paths.cache_dir=$out/cache" "${train_extra[@]}")
forever=100000  # parts have no cap of their own: only the deadline cuts them

# timed NAME CMD...: a part whose output goes to OUT/NAME.log and wall time to OUT/NAME_wall_seconds.txt
timed() {
  local name="$1"; shift
  if ! part "$name" "$forever" "$@" > "$out/$name.log" 2>&1; then
    rm -f "$out/$name.log"  # skipped: it never ran
    return
  fi
  echo "$LAST_SECONDS" > "$out/${name}_wall_seconds.txt"
}

for seed in $seeds; do
  timed "train_s$seed" "$PYTHON" train.py "${common[@]}" "seed=$seed" "hydra.run.dir=$out/mnist_s$seed"
done
for seed in $seeds; do
  ckpt="$out/mnist_s$seed/checkpoints/diffusion.ckpt"
  if [[ ! -f "$ckpt" ]]; then
    echo "grid_s$seed: skipped, no checkpoint $ckpt" >> "$out/parts.txt"
    failed+=("grid_s$seed(skipped)")
    continue
  fi
  timed "grid_s$seed" "$PYTHON" evaluate.py -m "ckpt=$ckpt" dataset=mnist dataset.source=bundled seed=0 sampler=dpmpp_2m \
    guidance=cfg "guidance.scale=$scales" "guidance.autoguidance=$auto" "paths.cache_dir=$out/cache" \
    "hydra.sweep.dir=$out/grid_s$seed"
done
for at in $guide_at; do
  for seed in $seeds; do
    timed "guide${at}_s$seed" "$PYTHON" train.py "${common[@]}" "seed=$seed" "diffusion.guide_at=$at" \
      "hydra.run.dir=$out/guide${at}_s$seed"
  done
done
if (( ${#failed[@]} )); then
  echo "not done: ${failed[*]} (see $out/parts.txt)" >&2
  exit 1
fi
