#!/usr/bin/env bash
# The main job at several stage-2 budgets, each scored over a grid of sampler settings, per seed:
#   experiments/stage2_budget.sh OUT_DIR STEPS...      e.g. experiments/stage2_budget.sh outputs/budget 520 700 780
#   (env: SEEDS="0 1", SCALES=1.75,1.85,2, AUTO=2,2.5,3, TRAIN="" overrides added to every training run,
#    e.g. TRAIN="trainer=gpu trainer.precision=32-true", EVAL="" overrides added to every evaluation)
#
# 1. `train.py model=vqvae +experiment=mnist_cond seed=S diffusion.max_steps=N` for each seed and budget
#    -> OUT/N_sS/, through experiments/lever_screen.sh with one arm per budget (stage 1 and the evaluation
#    classifier are trained once per seed, in OUT/cache_sS, and reused by the other budgets, so the
#    budgets differ in stage 2 alone; a budget that already has a run in OUT is refused)
# 2. `evaluate.py -m` on each checkpoint with DPM-Solver++(2M)-20 and CFG (the setting this study screened)
#    over guidance s x autoguidance w, 1,000 samples per point, with
#    the seed's own split as reference and the seed as sampling seed   -> OUT/grid_N_sS/summary.csv
# 3. one table per budget (experiments/grid_table.py): accuracy / FID÷floor / FID÷recon / diversity per
#    seed and setting, in bold where all four of the main job's targets are met   -> OUT/tables.md
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: $0 OUT_DIR STEPS...}" && cd "$1" && pwd)"
shift
(( $# )) || { echo "usage: $0 OUT_DIR STEPS... (at least one stage-2 budget)" >&2; exit 2; }
for steps in "$@"; do
  [[ "$steps" =~ ^[1-9][0-9]*$ ]] || { echo "STEPS: '$steps' is not allowed: a whole number >= 1" >&2; exit 2; }
done
read -r -a eval_extra <<< "${EVAL:-}"
seeds="${SEEDS:-0 1}"
cd "$repo"
arms=()
for steps in "$@"; do arms+=("$steps=diffusion.max_steps=$steps"); done
SEEDS="$seeds" COMMON="${TRAIN:-}" bash experiments/lever_screen.sh "$out" "${arms[@]}" > /dev/null
for steps in "$@"; do
  for seed in $seeds; do
    "$PYTHON" evaluate.py -m "ckpt=$out/${steps}_s$seed/checkpoints/diffusion.ckpt" dataset=mnist "seed=$seed" \
      sampler=dpmpp_2m guidance=cfg "guidance.scale=${SCALES:-1.75,1.85,2}" "guidance.autoguidance=${AUTO:-2,2.5,3}" \
      "paths.cache_dir=$out/cache_s$seed" "${eval_extra[@]}" "hydra.sweep.dir=$out/grid_${steps}_s$seed" \
      > "$out/grid_${steps}_s$seed.log" 2>&1
  done
done
for steps in "$@"; do
  echo "stage 2: $steps steps"
  echo
  columns=()
  for seed in $seeds; do columns+=("seed $seed=$out/grid_${steps}_s$seed/summary.csv"); done
  "$PYTHON" experiments/grid_table.py "${columns[@]}"
  echo
done | tee "$out/tables.md"
