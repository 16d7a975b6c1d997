#!/usr/bin/env bash
# Distributed testing with torchrun, one process per GPU (per process slot on a CPU-only
# machine, where tools/test.py switches to the gloo backend).
#
#   bash tools/dist_test.sh CONFIG CHECKPOINT GPUS [test.py arguments...]
#
# NNODES, NODE_RANK, MASTER_ADDR and PORT as for tools/dist_train.sh.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: $0 CONFIG CHECKPOINT GPUS [test.py arguments...]" >&2
  exit 2
fi
exec bash "$(dirname "${BASH_SOURCE[0]}")/torchrun_launch.sh" test.py "$3" "$1" "$2" "${@:4}"
