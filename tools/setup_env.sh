#!/usr/bin/env bash
# One-command environment for mmrala: creates .venv, installs the OpenMMLab stack
# (building mmcv 2.1.0 with compiled ops once and caching the wheel outside the repo),
# then installs mmrala in editable mode. Safe to run again: every step is skipped or
# is a no-op when its result is already there.
#
# Knobs (environment variables):
#   PYTHON        interpreter for the venv              (default: python3)
#   VENV          where the venv lives                  (default: <repo>/.venv)
#   MMRALA_CACHE  where the built mmcv wheel is kept    (default: ~/.cache/mmrala)
#   TORCH_SPEC    torch requirement(s)                  (default: torch==2.14.1 torchvision==0.29.1)
#   FORCE_CUDA=1  build mmcv's CUDA ops even when no GPU is visible (needs nvcc)
#   MAX_JOBS      parallel compile jobs for mmcv        (default: number of cores)
set -euo pipefail

repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$repo_root"

PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$repo_root/.venv}"
MMRALA_CACHE="${MMRALA_CACHE:-$HOME/.cache/mmrala}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.14.1 torchvision==0.29.1}"
MMCV_VERSION=2.1.0
# mmengine imports pkg_resources at runtime, which setuptools >= 81 no longer ships;
# torch needs >= 77. Repeat the pin in every pip call that may resolve setuptools.
SETUPTOOLS_PIN='setuptools>=77,<81'

log() { printf '\n[setup_env] %s\n' "$*"; }

if [ ! -x "$VENV/bin/python" ]; then
  log "creating virtual environment at $VENV"
  "$PYTHON" -m venv "$VENV"
fi
py="$VENV/bin/python"
pip_install() { "$py" -m pip install --disable-pip-version-check -c "$repo_root/requirements/constraints.txt" "$@" "$SETUPTOOLS_PIN"; }

log "base tooling and torch ($TORCH_SPEC)"
pip_install --upgrade pip wheel ninja
# shellcheck disable=SC2086
pip_install $TORCH_SPEC

# Identify the build so that a cached wheel is only reused for the same python/torch/CUDA.
read -r py_tag torch_version cuda_tag gpu_visible < <("$py" - <<'PY'
import sys, torch
cuda = torch.version.cuda
print(f"cp{sys.version_info.major}{sys.version_info.minor}",
      torch.__version__.split('+')[0],
      f"cu{cuda.replace('.', '')}" if cuda else "cpu",
      int(torch.cuda.is_available()))
PY
)

build_cuda=0
if [ "${FORCE_CUDA:-0}" = "1" ] || { [ "$gpu_visible" = "1" ] && [ "$cuda_tag" != "cpu" ]; }; then
  if command -v nvcc >/dev/null 2>&1; then
    build_cuda=1
  elif [ "${FORCE_CUDA:-0}" = "1" ]; then
    echo "[setup_env] FORCE_CUDA=1 was set but nvcc is not on PATH; install the CUDA toolkit" \
         "matching torch ($cuda_tag) or unset FORCE_CUDA to build the CPU ops only." >&2
    exit 1
  fi
fi
ops_tag=$([ "$build_cuda" = 1 ] && echo "$cuda_tag" || echo cpu)
wheel_dir="$MMRALA_CACHE/wheels/mmcv-$MMCV_VERSION-$py_tag-torch$torch_version-$ops_tag"

mmcv_ready() {
  "$py" - <<PY 2>/dev/null
import importlib.metadata as md
assert md.version('mmcv') == '$MMCV_VERSION'
from mmcv.ops import nms  # the compiled extension loads
PY
}

if mmcv_ready; then
  log "mmcv $MMCV_VERSION with compiled ops is already installed"
else
  if ! ls "$wheel_dir"/mmcv-*.whl >/dev/null 2>&1; then
    log "building mmcv $MMCV_VERSION ($ops_tag ops); this takes about 20-25 minutes on 2 cores"
    build_dir="$(mktemp -d)"
    trap 'rm -rf "$build_dir"' EXIT
    # --no-build-isolation: with isolation the sdist's metadata step fails on new setuptools.
    "$py" -m pip download --disable-pip-version-check --no-deps --no-build-isolation \
      --no-binary mmcv -d "$build_dir" "mmcv==$MMCV_VERSION"
    tar -xzf "$build_dir"/mmcv-"$MMCV_VERSION".tar.gz -C "$build_dir"
    src="$build_dir/mmcv-$MMCV_VERSION"
    # torch >= 2.10 headers need C++20.
    sed -i -e 's/-std=c++14/-std=c++20/g' -e 's/-std=c++17/-std=c++20/g' "$src/setup.py"
    mkdir -p "$wheel_dir"
    (cd "$src" && MMCV_WITH_OPS=1 FORCE_CUDA="$build_cuda" MAX_JOBS="${MAX_JOBS:-$(nproc)}" \
      "$py" -m pip wheel --disable-pip-version-check --no-deps --no-build-isolation \
      -w "$wheel_dir" .)
  else
    log "reusing cached mmcv wheel from $wheel_dir"
  fi
  pip_install "$wheel_dir"/mmcv-*.whl
fi

log "installing mmrala (editable) with its test extra"
pip_install -e ".[tests]"

"$py" - <<'PY'
import mmcv, mmdet, mmseg, mmpretrain, mmengine, torch, timm, mmrala
from mmcv.ops import nms  # noqa: F401
print(f"[setup_env] ready: torch {torch.__version__}, mmengine {mmengine.__version__}, "
      f"mmcv {mmcv.__version__}, mmdet {mmdet.__version__}, mmseg {mmseg.__version__}, "
      f"mmpretrain {mmpretrain.__version__}, timm {timm.__version__}, mmrala {mmrala.__version__}")
PY
