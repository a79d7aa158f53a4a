#!/usr/bin/env bash
# Runs the same `toonjax train` on every worker of an existing Cloud TPU VM slice (e.g. a
# v4-32: 4 workers x 4 chips), through `gcloud compute tpus tpu-vm ssh --worker=all`.
# It creates nothing: the slice, toonjax on each worker and a workdir every worker can write
# (gs://BUCKET/PATH with toonjax[gcs] installed, an NFS/Filestore mount, or a bucket mounted
# with gcsfuse) must exist already.
#
#   launch/tpu_pod.sh --tpu my-v4-32 --zone us-central2-b [--project P] \
#       [--dir ~/toonjax] [--setup 'source ~/venv/bin/activate'] [--dry-run] \
#       -- --config configs/stylegan2_ada.py:paper256 --workdir /mnt/shared/runs/sg2 \
#          --config.data.path=/mnt/shared/data/ffhq256 --config.data.toyfaces=False
#
# Everything after `--` is passed to `toonjax train` unchanged on every worker; the script adds
# --config.distributed=on (JAX detects the slice from the TPU VM metadata: coordinator, process
# count and index) unless the arguments already set --config.distributed. The batch size in the
# config is global (over all chips of all workers).
#
# --dry-run prints the gcloud command and the command each worker would run, and runs nothing.
# A clean stop (one checkpoint of the same step on every worker) is a SIGTERM to the trainers:
#   gcloud compute tpus tpu-vm ssh NAME --zone Z --worker=all \
#       --command 'pkill -TERM -f "toonjax train"'
# and the same launch command resumes.
set -euo pipefail

usage() {
    sed -n '2,23p' "$0" | sed 's/^# \{0,1\}//'
    exit "${1:-2}"
}

TPU="" ZONE="" PROJECT="" DIR="" SETUP="" DRY=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tpu) TPU=${2:?--tpu needs a name}; shift 2 ;;
        --tpu=*) TPU=${1#*=}; shift ;;
        --zone) ZONE=${2:?--zone needs a zone}; shift 2 ;;
        --zone=*) ZONE=${1#*=}; shift ;;
        --project) PROJECT=${2:?--project needs a project}; shift 2 ;;
        --project=*) PROJECT=${1#*=}; shift ;;
        --dir) DIR=${2:?--dir needs a directory}; shift 2 ;;
        --dir=*) DIR=${1#*=}; shift ;;
        --setup) SETUP=${2:?--setup needs a command}; shift 2 ;;
        --setup=*) SETUP=${1#*=}; shift ;;
        --dry-run) DRY=1; shift ;;
        -h|--help) usage 0 ;;
        --) shift; break ;;
        *) echo "tpu_pod.sh: unknown option $1 (the training arguments go after --)" >&2; exit 2 ;;
    esac
done
[[ -n "$TPU" ]] || { echo "tpu_pod.sh: --tpu NAME is required (an existing TPU VM)" >&2; exit 2; }
[[ -n "$ZONE" ]] || { echo "tpu_pod.sh: --zone ZONE is required (the TPU VM's zone)" >&2; exit 2; }
[[ $# -gt 0 ]] || { echo "tpu_pod.sh: give the training arguments after --, e.g. -- --config configs/dcgan.py:toyfaces --workdir /mnt/shared/runs/dcgan" >&2; exit 2; }

TRAIN=(toonjax train "$@")
case " $* " in
    *" --config.distributed"*) ;;
    *) TRAIN+=(--config.distributed=on) ;;
esac
REMOTE=""
[[ -n "$DIR" ]] && REMOTE+="cd $DIR && "
[[ -n "$SETUP" ]] && REMOTE+="$SETUP && "
REMOTE+=$(printf '%q ' "${TRAIN[@]}")
REMOTE=${REMOTE% }

GCLOUD=(gcloud compute tpus tpu-vm ssh "$TPU" --zone "$ZONE")
[[ -n "$PROJECT" ]] && GCLOUD+=(--project "$PROJECT")
GCLOUD+=(--worker=all --command "$REMOTE")

if [[ $DRY -eq 1 ]]; then
    echo "# on every worker of $TPU ($ZONE):"
    echo "$REMOTE"
    echo "# through:"
    printf '%q ' "${GCLOUD[@]}"
    echo
    exit 0
fi
command -v gcloud >/dev/null || { echo "tpu_pod.sh: gcloud is not installed (https://cloud.google.com/sdk)" >&2; exit 2; }
exec "${GCLOUD[@]}"
