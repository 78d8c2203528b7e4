#!/usr/bin/env bash
# The main job as a new user runs it, from an empty directory (fresh stage-1 and classifier caches), per seed:
#   scripts/main_job_seeds.sh OUT_DIR [extra overrides, e.g. diffusion.max_steps=680]
# Runs `python train.py model=vqvae +experiment=mnist_cond seed=S <overrides>` for seeds 0 and 1 (SEEDS="0 1 2"
# to change; EXPERIMENT=mnist_text for the text job), each in OUT_DIR/sS, times it, then prints one table row per
# seed from its metrics.json (text jobs: a second table of the prompt metrics).
set -euo pipefail
export PYTHON="${PYTHON:-python3}"  # every step runs with the caller's interpreter (e.g. PYTHON=.venv/bin/python)
repo="$(cd "$(dirname "$0")/.." && pwd)"
out="$(mkdir -p "${1:?usage: $0 OUT_DIR [overrides]}" && cd "$1" && pwd)"
shift
for seed in ${SEEDS:-0 1}; do
  dir="$out/s$seed"
  mkdir -p "$dir" && cd "$dir"
  start=$(date +%s)
  "$PYTHON" "$repo/train.py" model=vqvae +experiment="${EXPERIMENT:-mnist_cond}" seed="$seed" "$@" hydra.run.dir="$dir/run" > "$dir/train.log" 2>&1
  echo "$(( $(date +%s) - start ))" > "$dir/wall_seconds"
done
"$PYTHON" - "$out" <<'PY'
import json, pathlib, sys
print("| seed | wall | stage 1 / stage 2 s | cond. acc | FID | floor | recon | FID / floor | FID / recon | diversity |")
print("|---|---|---|---|---|---|---|---|---|---|")
for run in sorted(pathlib.Path(sys.argv[1]).glob("s*/run/metrics.json")):
    m, wall = json.loads(run.read_text()), int((run.parent.parent / "wall_seconds").read_text())
    print(f"| {run.parent.parent.name[1:]} | {wall // 60} min {wall % 60} s | {m['ae/wall_seconds']:.0f} / {m['ldm/wall_seconds']:.0f} "
          f"| {100 * m['eval/cond_acc']:.1f} % | {m['eval/fid']:.2f} | {m['eval/fid_floor']:.2f} | {m['eval/fid_recon']:.2f} "
          f"| {m['eval/fid_ratio']:.2f} | {m['eval/fid_recon_ratio']:.2f} | {m['eval/diversity']:.2f} |")
text = [(run, json.loads(run.read_text())) for run in sorted(pathlib.Path(sys.argv[1]).glob("s*/run/metrics.json"))]
text = [(run, m) for run, m in text if "eval/text/seen/class_acc" in m]
if text:
    print()
    print("| seed | class acc.: held-out phrasings / held-out combinations / seen | attribute acc.: same (chance 33 %) "
          "| paired thin→thick / left→right |")
    print("|---|---|---|---|")
    for run, m in text:
        f = lambda key: f"{100 * m['eval/text/' + key]:.1f} %"
        families = ("held_out_phrasings", "held_out_combinations", "seen")
        print(f"| {run.parent.parent.name[1:]} | {' / '.join(f(k + '/class_acc') for k in families)} "
              f"| {' / '.join(f(k + '/attribute_acc') for k in families)} "
              f"| {f('paired/thickness')} / {f('paired/slant')} |")
PY
