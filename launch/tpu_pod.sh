#!/usr/bin/env bash
# Runs annoprop_jax on every host of a Cloud TPU VM slice: gets the slice (creates it, or
# re-creates it when it was preempted), copies this checkout to all workers, installs it, starts
# the same command on all of them (detached, so a dropped ssh connection does not stop training)
# and streams worker 0's log.
#
#   launch/tpu_pod.sh [--dry-run] --tpu=NAME --zone=ZONE [--project=P] [--accelerator=v4-32] \
#       [--version=RUNTIME] [--spot] [--queued] -- train --config=configs/paper/ab_dino_coco.py \
#       --workdir=gs://BUCKET/ab_dino
#
# Defaults come from TPU_NAME, TPU_ZONE, TPU_PROJECT, TPU_ACCELERATOR, TPU_VERSION. --version
# defaults to the TPU software of the accelerator's generation (v2-v4: tpu-ubuntu2204-base, v5e:
# v2-alpha-tpuv5-lite, v5p: v2-alpha-tpuv5, v6e: v2-alpha-tpuv6e). --queued asks for the slice
# through a queued resource (how large and spot slices are obtained: it waits until the slice is
# granted). The workdir should be a gs:// path (checkpoints are written by all hosts).
#
# After a preemption, or when the log ends with exit 75 ("stopped early, resume me"), rerun the
# same line: a READY slice is reused (a run still going on it is stopped first with SIGTERM, so
# it saves); a slice that is PREEMPTED, TERMINATED or otherwise not usable (or a queued resource
# that was SUSPENDED or FAILED) is deleted and asked for again; training then resumes from the
# bucket. The hosts get Python 3.11 from apt when theirs is older (the base images ship 3.10).
# --dry-run prints the commands instead of running them.
set -euo pipefail

dry_run=0 spot=0 queued=0
tpu=${TPU_NAME:-} zone=${TPU_ZONE:-} project=${TPU_PROJECT:-}
accelerator=${TPU_ACCELERATOR:-v4-32} version=${TPU_VERSION:-}
while [[ $# -gt 0 ]]; do
  case "$1" in
    --dry-run) dry_run=1 ;;
    --tpu=*) tpu=${1#*=} ;;
    --zone=*) zone=${1#*=} ;;
    --project=*) project=${1#*=} ;;
    --accelerator=*) accelerator=${1#*=} ;;
    --version=*) version=${1#*=} ;;
    --spot) spot=1 ;;
    --queued) queued=1 ;;
    --) shift; break ;;
    *) break ;;
  esac
  shift
done
if [[ -z $tpu || -z $zone || $# -eq 0 ]]; then
  echo "usage: $0 [--dry-run] --tpu=NAME --zone=ZONE [--project=P] [--accelerator=TYPE] [--spot] [--queued] -- COMMAND [FLAGS...]" >&2
  exit 2
fi

if [[ -z $version ]]; then
  case "$accelerator" in
    v5litepod-*|v5e-*) version='v2-alpha-tpuv5-lite' ;;
    v5p-*) version='v2-alpha-tpuv5' ;;
    v6e-*) version='v2-alpha-tpuv6e' ;;
    *) version='tpu-ubuntu2204-base' ;;
  esac
fi
gcloud_tpu=(gcloud compute tpus tpu-vm)
gcloud_queued=(gcloud compute tpus queued-resources)
where=("--zone=$zone")
if [[ -n $project ]]; then where+=("--project=$project"); fi
if [[ $queued -eq 1 ]]; then
  create=("${gcloud_queued[@]}" create "$tpu" "--node-id=$tpu" "${where[@]}"
          "--accelerator-type=$accelerator" "--runtime-version=$version")
  remove=("${gcloud_queued[@]}" delete "$tpu" "${where[@]}" --quiet --force)
else
  create=("${gcloud_tpu[@]}" create "$tpu" "${where[@]}" "--accelerator-type=$accelerator"
          "--version=$version")
  remove=("${gcloud_tpu[@]}" delete "$tpu" "${where[@]}" --quiet)
fi
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

# The state of the slice (READY, PREEMPTED, ...), of its queued resource (ACTIVE, SUSPENDED,
# ...), or "absent".
state() {
  local out
  if [[ $queued -eq 1 ]]; then
    out=$("${gcloud_queued[@]}" describe "$tpu" "${where[@]}" '--format=value(state.state)' \
          2>/dev/null) || out=absent
  else
    out=$("${gcloud_tpu[@]}" describe "$tpu" "${where[@]}" '--format=value(state)' \
          2>/dev/null) || out=absent
  fi
  echo "${out:-absent}"
}

if [[ $dry_run -eq 1 ]]; then
  echo "# unless a usable slice exists (READY; queued: ACTIVE): delete a preempted one, then:"
  run "${create[@]}"
else
  current=$(state)
  case "$current" in
    READY|ACTIVE) echo "reusing $tpu ($current)" >&2 ;;
    absent) run "${create[@]}" ;;
    CREATING|WAITING_FOR_RESOURCES|PROVISIONING|ACCEPTED|RESTARTING|STARTING)
      echo "$tpu is $current: waiting for it" >&2 ;;
    *)
      echo "$tpu is $current: deleting it and asking for it again" >&2
      run "${remove[@]}"
      run "${create[@]}" ;;
  esac
  waited=0 poll=${TPU_POLL_SECONDS:-30}
  current=$(state)
  until [[ $current == READY || $current == ACTIVE ]]; do
    if [[ $waited -ge ${TPU_WAIT_SECONDS:-86400} ]]; then
      echo "$tpu is still $current after $waited s; rerun this line to keep waiting" >&2
      exit 75
    fi
    echo "waiting for $tpu ($current, $waited s)" >&2
    sleep "$poll"
    waited=$((waited + poll))
    current=$(state)
  done
fi
run tar -czf "$archive" -C "$repo" --exclude=.git --exclude=.venv --exclude=workdirs .
run "${gcloud_tpu[@]}" scp "$archive" "$tpu:~/annoprop_jax.tar.gz" "${where[@]}" --worker=all
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_stop"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_install"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=all "--command=$remote_run"
run "${gcloud_tpu[@]}" ssh "$tpu" "${where[@]}" --worker=0 "--command=tail -F $log"
