#!/usr/bin/env bash
# The srun launcher behind slurm_train.sh and slurm_test.sh, one task per GPU:
#
#   bash tools/slurm_launch.sh SCRIPT PARTITION JOB_NAME [script arguments...]
#
# GPUS (default 8), GPUS_PER_NODE (default 8), CPUS_PER_TASK (default 5) and SRUN_ARGS
# (extra srun options) tune the allocation; PYTHON picks the interpreter.
set -euo pipefail

SCRIPT=$1
PARTITION=$2
JOB_NAME=$3
GPUS_PER_NODE=${GPUS_PER_NODE:-8}
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

# shellcheck disable=SC2086
PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
srun -p "$PARTITION" \
  --job-name="$JOB_NAME" \
  --gres=gpu:"$GPUS_PER_NODE" \
  --ntasks="${GPUS:-8}" \
  --ntasks-per-node="$GPUS_PER_NODE" \
  --cpus-per-task="${CPUS_PER_TASK:-5}" \
  --kill-on-bad-exit=1 \
  ${SRUN_ARGS:-} \
  "${PYTHON:-python}" -u "$TOOLS_DIR/$SCRIPT" "${@:4}" --launcher=slurm
