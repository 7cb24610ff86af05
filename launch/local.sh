#!/usr/bin/env bash
# Runs annoprop_jax on this machine: one process, or N processes joined by jax.distributed
# over a 127.0.0.1 coordinator (to try a multi-process run on one box, e.g. with CPU devices).
#
#   launch/local.sh [--dry-run] [--processes=N] [--cpu_devices=M] [--port=P] COMMAND [FLAGS...]
#   launch/local.sh train --config=configs/ab_dino_scenes.py --workdir=workdirs/ab_dino
#   launch/local.sh --processes=2 --cpu_devices=4 train --config=configs/ab_dino_scenes.py:tiny --workdir=/tmp/mp
#
# --dry-run prints the commands instead of running them. PYTHON picks the interpreter.
set -euo pipefail

dry_run=0 processes=1 cpu_devices='' port=${ANNOPROP_PORT:-12355}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --processes=*) processes=${1#*=} ;;
    --cpu_devices=*) cpu_devices=${1#*=} ;;
    --port=*) port=${1#*=} ;;
    --) shift; break ;;
    *) break ;;
  esac
  shift
done
if [[ $# -eq 0 ]]; then
  echo "usage: $0 [--dry-run] [--processes=N] [--cpu_devices=M] [--port=P] COMMAND [FLAGS...]" >&2
  exit 2
fi
python=${PYTHON:-python3}
env_prefix=()
if [[ -n $cpu_devices ]]; then
  env_prefix=(env JAX_PLATFORMS=cpu "XLA_FLAGS=--xla_force_host_platform_device_count=$cpu_devices")
fi

commands=()
for ((i = 0; i < processes; i++)); do
  cmd=("${env_prefix[@]}" "$python" -m annoprop_jax.main "$@")
  if [[ $processes -gt 1 ]]; then
    cmd+=("--coordinator_address=127.0.0.1:$port" "--num_processes=$processes" "--process_id=$i")
  fi
  commands+=("$(printf '%q ' "${cmd[@]}")")
done

if [[ $dry_run -eq 1 ]]; then
  printf '%s\n' "${commands[@]% }"
  exit 0
fi
pids=()
for c in "${commands[@]}"; do
  eval "$c" &
  pids+=($!)
done
trap 'kill -TERM "${pids[@]}" 2>/dev/null' INT TERM   # a preemption notice reaches every process
status=0
for pid in "${pids[@]}"; do
  wait "$pid" || status=$?
done
exit $status
