#!/usr/bin/env bash
# Same-budget A/B of training levers for the main job, on several seeds:
#
#   experiments/lever_screen.sh OUT ARM [ARM...]          ARM = NAME or NAME=OVERRIDE[,OVERRIDE...]
#   e.g. experiments/lever_screen.sh out/levers baseline stratified=diffusion.timestep_sampling.stratified=true \
#          'betas=+diffusion.optimizer.betas=[0.9,0.99]'
#
#   env: SEEDS="0 1"; JOBS=1 runs at once (keep 1 on a CPU; on a GPU the small runs share the card);
#        COMMON="" overrides for every run, e.g. COMMON="trainer=gpu trainer.precision=32-true";
#        EXPERIMENT=mnist_cond; DEADLINE=seconds for the whole script (default: none);
#        CACHES_FROM="0=RUN_DIR 1=RUN_DIR": start seed S's cache as a copy of that finished run's
#        (its stage 1 and evaluation classifiers), so the arms are compared with that run as baseline.
#
# Each run is `train.py model=vqvae +experiment=$EXPERIMENT seed=S` plus its arm's overrides
# (separated by ","; a comma inside [...] or {...} belongs to the value), into OUT/<arm>_s<seed>/,
# scored by its own end-of-training evaluation (1,000 samples at the experiment's
# sampler setting). All arms of a seed share one cache, so the first arm trains stage 1 and the
# evaluation classifier and the others reuse them: the arms differ in stage 2 only, unless an arm
# overrides model.* (e.g. model.training.scale_equivariance), which trains its own stage 1. The first arm
# runs for every seed before any other arm starts. Then `experiments/lever_table.py OUT` prints the table.
# More arms can be added to an existing OUT later (its caches are reused); an arm and seed that
# already has a run there is refused before any work, so no finished run is overwritten.
#
# Every run goes on even if another failed; the exit status is 1 if any failed or was cut.
set -uo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
cd "$(dirname "$0")/.."
if (( $# < 2 )); then
  echo "usage: experiments/lever_screen.sh OUT ARM [ARM...]   (ARM = NAME or NAME=OVERRIDE[,OVERRIDE...])" >&2
  exit 2
fi
out="$1"; shift
seeds="${SEEDS:-0 1}"
jobs="${JOBS:-1}"
experiment="${EXPERIMENT:-mnist_cond}"
read -r -a common <<< "${COMMON:-}"
# shellcheck source=scripts/deadline.sh
source scripts/deadline.sh
deadline="${DEADLINE:-}"
if [[ -n "$deadline" ]]; then deadline_valid DEADLINE "$deadline" || exit 2; fi
if ! [[ "$jobs" =~ ^[1-9][0-9]*$ ]]; then
  echo "JOBS must be a whole number > 0, got '$jobs'" >&2
  exit 2
fi
for seed in $seeds; do
  if ! [[ "$seed" =~ ^[0-9]+$ ]]; then echo "SEEDS must be whole numbers >= 0, got '$seed'" >&2; exit 2; fi
done
# CACHES_FROM: each SEED=RUN_DIR is a finished run of that seed whose cache becomes OUT/cache_s<SEED>
declare -A cache_from=()
for item in ${CACHES_FROM:-}; do
  seed="${item%%=*}" run="${item#*=}"
  if [[ "$item" != *=* || ! " $seeds " == *" $seed "* ]]; then
    echo "CACHES_FROM: '$item' is not SEED=RUN_DIR with SEED one of SEEDS ($seeds)" >&2; exit 2
  fi
  [[ -z "${cache_from[$seed]:-}" ]] || { echo "CACHES_FROM: seed $seed is given twice" >&2; exit 2; }
  [[ -f "$run/resolved_config.yaml" ]] || { echo "CACHES_FROM: $run is not a finished train.py run (no resolved_config.yaml)" >&2; exit 2; }
  mapfile -t found < <("$PYTHON" -c '
import sys
from omegaconf import OmegaConf
config = OmegaConf.load(sys.argv[1] + "/resolved_config.yaml")
print(config.seed)
print(config.paths.cache_dir)
' "$run")
  if [[ "${found[0]:-}" != "$seed" ]]; then
    echo "CACHES_FROM: $run was trained with seed=${found[0]:-?}, not $seed: its stage 1 and classifiers belong to another split" >&2
    exit 2
  fi
  [[ -d "${found[1]:-}" ]] || { echo "CACHES_FROM: the cache of $run (${found[1]:-?}) does not exist" >&2; exit 2; }
  if [[ -e "$out/cache_s$seed" ]]; then
    echo "CACHES_FROM: $out/cache_s$seed already exists: a screen's cache is never replaced (new OUT)" >&2; exit 2
  fi
  cache_from[$seed]="${found[1]}"
done
names=(); overrides=()
for arm in "$@"; do
  name="${arm%%=*}"
  if ! [[ "$name" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "arm name '$name' must be letters, digits, '_', '.' or '-' (from '$arm')" >&2
    exit 2
  fi
  for seen in "${names[@]}"; do
    if [[ "$seen" == "$name" ]]; then echo "arm name '$name' is given twice" >&2; exit 2; fi
  done
  names+=("$name")
  if [[ "$arm" == *=* ]]; then overrides+=("${arm#*=}"); else overrides+=(""); fi
done
for name in "${names[@]}"; do
  for seed in $seeds; do
    if [[ -e "$out/${name}_s$seed" || -e "$out/${name}_s$seed.log" ]]; then
      echo "$out/${name}_s$seed already exists: a screen adds arms to OUT but never runs one again (new name, or new OUT)" >&2
      exit 2
    fi
  done
done
mkdir -p "$out"
for seed in "${!cache_from[@]}"; do
  cp -r "${cache_from[$seed]}" "$out/cache_s$seed" || { echo "CACHES_FROM: copying ${cache_from[$seed]} failed" >&2; exit 1; }
  echo "seed $seed: cache copied from ${cache_from[$seed]}" >&2
done
deadline_start "${deadline:-100000000}" "$out"

# split_overrides TEXT: one override per line, split on the commas outside [...] and {...}
split_overrides() {
  "$PYTHON" -c '
import sys
depth, item = 0, ""
for char in sys.argv[1]:
    depth += char in "[{"
    depth -= char in "]}"
    if char == "," and depth == 0:
        print(item); item = ""
    else:
        item += char
if item:
    print(item)
' "$1"
}

# run_arm INDEX SEED: one training run into OUT/<arm>_s<seed>, its log beside it, its wall time in OUT/parts.txt
run_arm() {
  local name="${names[$1]}" seed="$2" extra=()
  local dir="$out/${name}_s$seed"
  mapfile -t extra < <(split_overrides "${overrides[$1]}")
  part "${name}_s$seed" 100000000 "$PYTHON" train.py model=vqvae "+experiment=$experiment" "seed=$seed" \
    logger=csv "${common[@]}" "paths.cache_dir=$out/cache_s$seed" "hydra.run.dir=$dir" "${extra[@]}" \
    > "$out/${name}_s$seed.log" 2>&1
}

# in_parallel INDEX...: every seed of each arm given, JOBS at a time
in_parallel() {
  local index seed
  for index in "$@"; do
    for seed in $seeds; do
      while (( $(jobs -rp | wc -l) >= jobs )); do wait -n; done
      run_arm "$index" "$seed" &
    done
  done
  wait
}

in_parallel 0
rest=()
for (( i = 1; i < ${#names[@]}; i++ )); do rest+=("$i"); done
(( ${#rest[@]} )) && in_parallel "${rest[@]}"

status=0
for name in "${names[@]}"; do
  for seed in $seeds; do
    if ! grep -q "^${name}_s$seed: exit 0 " "$out/parts.txt" || [[ ! -f "$out/${name}_s$seed/metrics.json" ]]; then
      echo "not done: ${name}_s$seed (see $out/parts.txt and $out/${name}_s$seed.log)" >&2
      status=1
    fi
  done
done
"$PYTHON" experiments/lever_table.py "$out" "${names[@]}" || status=1
exit "$status"
