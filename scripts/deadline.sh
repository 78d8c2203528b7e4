# Sourced (not run) by scripts that must end within a job's time limit (a batch-queue slot, a rented GPU):
# scripts/gpu_check.sh and experiments/gpu_guidance_grid.sh. Each part runs under `timeout`, cut to what is
# left of a whole-script deadline: the last parts shrink first, and the script ends in time with every
# finished part's files written.
#
#   deadline_valid NAME VALUE || exit 2   refuses a VALUE that is not a whole number of seconds > 0
#   deadline_start SECONDS OUT            the clock starts; parts record themselves in OUT/parts.txt
#   part NAME CAP CMD...                  run CMD under timeout min(CAP, seconds left); a part with under
#                                         5 s left is skipped (status 1; 0 once it ran). Skipped, failed and
#                                         timed-out parts are listed in the array `failed`; LAST_SECONDS is
#                                         the part's wall time.

deadline_valid() {
  if ! [[ "$2" =~ ^[1-9][0-9]*$ ]]; then
    echo "$1 must be a whole number of seconds > 0, got '$2'" >&2
    return 1
  fi
}

deadline_start() {
  deadline_end=$(( $(date +%s) + $1 ))
  deadline_out="$2"
  failed=()
  LAST_SECONDS=0
}

part() {
  local name="$1" cap="$2"; shift 2
  local left=$(( deadline_end - $(date +%s) ))
  local limit=$(( cap < left ? cap : left ))
  LAST_SECONDS=0
  if (( limit < 5 )); then
    echo "$name: skipped, no time left before the deadline" >> "$deadline_out/parts.txt"
    failed+=("$name(skipped)")
    return 1
  fi
  local start rc
  start=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@"
  rc=$?
  LAST_SECONDS=$(awk -v start="$start" -v end="$(date +%s.%N)" 'BEGIN { printf "%.1f", end - start }')
  echo "$name: exit $rc after $LAST_SECONDS s (limit $limit s)" >> "$deadline_out/parts.txt"
  if (( rc == 124 || rc == 137 )); then failed+=("$name(timed out)"); elif (( rc != 0 )); then failed+=("$name"); fi
  return 0
}
