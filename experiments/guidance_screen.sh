#!/usr/bin/env bash
# Score finished main-job runs over sampler guidance settings, and tabulate them against the quality targets:
#
#   experiments/guidance_screen.sh OUT LABEL=RUN_DIR [LABEL=RUN_DIR ...]
#
# RUN_DIR is a train.py run (its checkpoints/diffusion.ckpt, resolved_config.yaml and .hydra/). Each run is
# scored exactly as its end-of-training evaluation was (its dataset settings and split seed, its cache, so
# the same classifier, or classifiers: its evaluation.classifier_members and classifier_epochs; its solver,
# steps and timestep grid; sampling seed 0, 1,000 samples), by `evaluate.py -m` over
#   classifier-free guidance:          SCALES (default 1.75,2) x AUTO (default 2.5,3.5)
#   and, when APG_SCALES is set, APG:  APG_SCALES x APG_AUTO (default 3) at APG_ETA (0), APG_MOMENTUM (-0.5)
# (AUTO / APG_AUTO are autoguidance scales w). EVAL="key=value ..." adds overrides to every evaluation
# (e.g. EVAL="evaluation.classifier_members=5": docs/experiments/classifier-share.md).
# Sweeps land in OUT/LABEL_cfg/ and OUT/LABEL_apg/ (summary.csv each); the table, one row per setting and
# one column per run, is printed by experiments/grid_table.py and kept in OUT/table.md.
#
# Every argument is checked before any work, and OUT/LABEL_* sweeps that exist are never evaluated again.
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
repo="$(cd "$(dirname "$0")/.." && pwd)"
if (( $# < 2 )); then
  echo "usage: experiments/guidance_screen.sh OUT LABEL=RUN_DIR [LABEL=RUN_DIR ...]" >&2
  exit 2
fi
out="$1"; shift
number_list='^[0-9]+(\.[0-9]+)?(,[0-9]+(\.[0-9]+)?)*$'
for name in SCALES AUTO APG_AUTO; do
  value="${!name:-1}"
  [[ "$value" =~ $number_list ]] || { echo "$name='$value' is not allowed: comma-separated numbers, e.g. 1.75,2" >&2; exit 2; }
done
if [[ -n "${APG_SCALES:-}" && ! "$APG_SCALES" =~ $number_list ]]; then
  echo "APG_SCALES='$APG_SCALES' is not allowed: comma-separated numbers, e.g. 2.5,3 (or empty: no APG)" >&2
  exit 2
fi
for name in APG_ETA APG_MOMENTUM; do  # their ranges are the sampler's to check; here, that they are numbers
  value="${!name:-0}"
  [[ "$value" =~ ^-?[0-9]+(\.[0-9]+)?$ ]] || { echo "$name='$value' is not allowed: a number, e.g. -0.5" >&2; exit 2; }
done
declare -A runs=()
labels=()
for item in "$@"; do
  label="${item%%=*}" run="${item#*=}"
  if [[ "$item" != *=* || ! "$label" =~ ^[A-Za-z0-9_.-]+$ ]]; then
    echo "'$item' is not allowed: LABEL=RUN_DIR, LABEL of letters, digits, '_', '.', '-'" >&2
    exit 2
  fi
  [[ -z "${runs[$label]:-}" ]] || { echo "label '$label' is given twice" >&2; exit 2; }
  for need in checkpoints/diffusion.ckpt resolved_config.yaml .hydra/hydra.yaml; do
    [[ -f "$run/$need" ]] || { echo "'$item': $run/$need does not exist (not a finished train.py run)" >&2; exit 2; }
  done
  for kind in cfg apg; do
    if [[ -e "$out/${label}_$kind" ]]; then
      echo "$out/${label}_$kind exists: choose a new OUT or label (finished sweeps are never redone)" >&2
      exit 2
    fi
  done
  runs[$label]="$(cd "$run" && pwd)"
  labels+=("$label")
done
read -r -a eval_extra <<< "${EVAL:-}"
mkdir -p "$out"
cd "$repo"

columns=()
for label in "${labels[@]}"; do
  run="${runs[$label]}"
  # the run's dataset exactly as it trained (option, split seed, size, source), its cache and its evaluation
  # classifiers: its own classifier(s), reference split and real floor (its solver and grid are the checkpoint's
  # own, which evaluate.py draws with). One value per line: dataset option, cache, overrides (runs from before
  # evaluation.classifier_members had one classifier).
  mapfile -t setup < <("$PYTHON" - "$run" <<'EOF'
import json
import sys

from omegaconf import OmegaConf

run = sys.argv[1]
config = OmegaConf.load(f"{run}/resolved_config.yaml")
print(OmegaConf.load(f"{run}/.hydra/hydra.yaml").hydra.runtime.choices.dataset)
print(config.paths.cache_dir)
dataset = OmegaConf.to_container(config.dataset, resolve=True)
for key in ("root", "source", "val_fraction", "seed", "image_size", "max_train_samples"):  # what the data are
    if key in dataset:
        print(f"dataset.{key}={'null' if dataset[key] is None else json.dumps(dataset[key])}")
evaluation = OmegaConf.to_container(config.evaluation, resolve=True)
print(f"evaluation.classifier_members={evaluation.get('classifier_members', 1)}")
print(f"evaluation.classifier_epochs={json.dumps(evaluation.get('classifier_epochs'))}")
EOF
)
  (( ${#setup[@]} >= 2 )) || { echo "could not read the configuration of $run" >&2; exit 1; }
  own=()  # the run's settings, less those EVAL sets itself
  for item in "${setup[@]:2}"; do
    [[ " ${eval_extra[*]} " == *" ${item%%=*}="* ]] || own+=("$item")
  done
  common=("ckpt=$run/checkpoints/diffusion.ckpt" "dataset=${setup[0]}" "${own[@]}" seed=0
    "paths.cache_dir=${setup[1]}" "${eval_extra[@]}")
  "$PYTHON" evaluate.py -m "${common[@]}" guidance=cfg "guidance.scale=${SCALES:-1.75,2}" \
    "guidance.autoguidance=${AUTO:-2.5,3.5}" "hydra.sweep.dir=$out/${label}_cfg" > "$out/${label}_cfg.log" 2>&1 \
    || { echo "the CFG sweep of $label failed: see $out/${label}_cfg.log" >&2; exit 1; }
  columns+=("$label=$out/${label}_cfg/summary.csv")
  if [[ -n "${APG_SCALES:-}" ]]; then
    "$PYTHON" evaluate.py -m "${common[@]}" guidance=apg "guidance.eta=${APG_ETA:-0}" \
      "guidance.momentum=${APG_MOMENTUM:--0.5}" "guidance.scale=$APG_SCALES" \
      "guidance.autoguidance=${APG_AUTO:-3}" "hydra.sweep.dir=$out/${label}_apg" > "$out/${label}_apg.log" 2>&1 \
      || { echo "the APG sweep of $label failed: see $out/${label}_apg.log" >&2; exit 1; }
    columns+=("$label=$out/${label}_apg/summary.csv")
  fi
done
"$PYTHON" experiments/grid_table.py "${columns[@]}" | tee "$out/table.md"
