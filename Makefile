PYTHON ?= .venv/bin/python

.PHONY: setup test test-all lint quickstart

# Creates .venv with the full OpenMMLab stack (mmcv 2.1.0 is built once and cached in
# ~/.cache/mmrala) and installs mmrala in editable mode. Safe to run again.
setup:
	bash tools/setup_env.sh

# The quick start: set-up, then Mask R-CNN with RAVLT-T trained from scratch on the
# generated shapes dataset, its held-out box mAP against its config's floor, and pictures.
quickstart: setup
	$(PYTHON) tools/quickstart.py maskrcnn

# The quick tier, after every change: unit, interpreter and config-build tests.
test:
	$(PYTHON) -m pytest -m "not slow"

# Everything (CI): adds the end-to-end, kill/resume, distributed and quick-start runs.
test-all:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check mmrala tools tests configs
