PYTHON ?= .venv/bin/python

.PHONY: setup test lint

# Creates .venv with the full OpenMMLab stack (mmcv 2.1.0 is built once and cached in
# ~/.cache/mmrala) and installs mmrala in editable mode. Safe to run again.
setup:
	bash tools/setup_env.sh

test:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check mmrala tools tests configs
