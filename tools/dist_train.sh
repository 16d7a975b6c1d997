#!/usr/bin/env bash
# Distributed training with torchrun, one process per GPU (per process slot on a CPU-only
# machine, where tools/train.py switches to the gloo backend and plain BN).
#
#   bash tools/dist_train.sh CONFIG GPUS [train.py arguments...]
#
# Several nodes: run it on every node with the same MASTER_ADDR and PORT, e.g.
#   NNODES=2 NODE_RANK=0 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
#   NNODES=2 NODE_RANK=1 MASTER_ADDR=10.0.0.1 PORT=29500 bash tools/dist_train.sh CONFIG 8
# PYTHON picks the interpreter (default: python).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG GPUS [train.py arguments...]" >&2
  exit 2
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh" train.py "$2" "$1" "${@:3}"
