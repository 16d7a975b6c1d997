#!/usr/bin/env bash
# The torchrun launcher behind dist_train.sh and dist_test.sh:
#
#   bash tools/torchrun_launch.sh SCRIPT PROCS_PER_NODE [script arguments...]
#
# NNODES (default 1), NODE_RANK (0), MASTER_ADDR (127.0.0.1) and PORT (29500) describe
# a multi-node run; PYTHON picks the interpreter (default: python).
set -euo pipefail

SCRIPT=$1
PROCS_PER_NODE=$2
TOOLS_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

PYTHONPATH="$TOOLS_DIR/..${PYTHONPATH:+:$PYTHONPATH}" \
exec "${PYTHON:-python}" -m torch.distributed.run \
  --nnodes="${NNODES:-1}" \
  --node_rank="${NODE_RANK:-0}" \
  --master_addr="${MASTER_ADDR:-127.0.0.1}" \
  --nproc_per_node="$PROCS_PER_NODE" \
  --master_port="${PORT:-29500}" \
  "$TOOLS_DIR/$SCRIPT" "${@:3}" --launcher pytorch
