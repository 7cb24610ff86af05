#!/usr/bin/env bash
# Runs annoprop_jax on every host of a Cloud TPU VM slice: creates the slice if it does not
# exist, copies this checkout to all workers, installs it, starts the same command on all of
# them (detached, so a dropped ssh connection does not stop training) and streams worker 0's log.
#
#   launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=P] [--accelerator=v4-32] \
#       [--version=tpu-ubuntu2204-base] [--spot] -- train --config=configs/paper/ab_dino_coco.py \
#       --workdir=gs://BUCKET/ab_dino
#
# Defaults come from TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_ACCELERATOR, TPU_VERSION. The
# workdir should be a gs:// path (checkpoints are written by all hosts). Rerun the same line
# after a preemption, or when the log ends with exit 75 ("stopped early, resume me"): the slice
# is reused (or recreated), a run still going on it is stopped first (SIGTERM: it saves), and
# training resumes. The hosts get Python 3.11 from apt when theirs is older (the base images
# ship 3.10). --dry-run prints the commands instead of running them.
set -euo pipefail

dry_run=0 spot=0
tpu=${TPU_NAME:-} zone=${TPU_ZONE:-} project=${TPU_PROJECT:-}
accelerator=${TPU_ACCELERATOR:-v4-32} version=${TPU_VERSION:-tpu-ubuntu2204-base}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --) shift; break ;;
    *) break ;;
  esac
  shift
done
if [[ -z $tpu || -z $zone || $# -eq 0 ]]; then
  echo "usage: $0 [--dry-run] --tpu=NAME --zone=ZONE [--project=P] [--accelerator=TYPE] -- COMMAND [FLAGS...]" >&2
  exit 2
fi

gcloud_tpu=(gcloud compute tpus tpu-vm)
where=("--zone=$zone")
if [[ -n $project ]]; then where+=("--project=$project"); fi
create=("${gcloud_tpu[@]}" create "$tpu" "${where[@]}" "--accelerator-type=$accelerator"
        "--version=$version")
if [[ $spot -eq 1 ]]; then create+=(--spot); fi
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
archive=/tmp/annoprop_jax_$tpu.tar.gz
# shellcheck disable=SC2088  # a path on the TPU hosts: their shell expands it
log='~/annoprop_jax.log'
args=$(printf '%q ' "$@")
# A previous run on the hosts gets SIGTERM (it saves a checkpoint) and is waited for ([p]: the
# pattern does not match this command's own shell).
remote_stop="pkill -TERM -f '[p]ython -m annoprop_jax.main' || true; while pgrep -f '[p]ython -m annoprop_jax.main' > /dev/null; do sleep 2; done"
python_311="py=\$(command -v python3.12 || command -v python3.11 || true); if [ -z \"\$py\" ]; then sudo apt-get update -q && sudo apt-get install -y -q python3.11 python3.11-venv && py=python3.11; fi"
remote_install="$python_311 && mkdir -p ~/annoprop_jax && tar -xzf ~/annoprop_jax.tar.gz -C ~/annoprop_jax && cd ~/annoprop_jax && \$py -m venv .venv && . .venv/bin/activate && pip install -q -e '.[tpu]'"
remote_run="cd ~/annoprop_jax && . .venv/bin/activate && nohup sh -c 'python -m annoprop_jax.main ${args}--distributed=on; echo \"exit \$?\"' < /dev/null > $log 2>&1 &"

# Shell-quotes one word for display: bare when safe, else in single quotes.
quote() {
  if [[ $1 =~ ^[A-Za-z0-9_@%+=:,./~-]+$ ]]; then
    printf '%s' "$1"
  else
    printf "'%s'" "${1//\'/\'\\\'\'}"
  fi
}

run() {
  if [[ $dry_run -eq 1 ]]; then
    local words=() word
    for word in "$@"; do words+=("$(quote "$word")"); done
    echo "${words[*]}"
  else
    "$@"
  fi
}

if [[ $dry_run -eq 1 ]]; then
  echo "# create the slice unless it exists:"
fi
if [[ $dry_run -eq 1 ]] || ! "${gcloud_tpu[@]}" describe "$tpu" "${where[@]}" >/dev/null 2>&1; then
  run "${create[@]}"
fi
run tar -czf "$archive" -C "$repo" --exclude=.git --exclude=.venv --exclude=workdirs .
run "${gcloud_tpu[@]}" scp "$archive" "$tpu:~/annoprop_jax.tar.gz" "${where[@]}" --worker=all
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_stop"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_install"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_run"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=0 "--command=tail -F $log"
