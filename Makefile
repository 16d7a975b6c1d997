PYTHON ?= .venv/bin/python

.PHONY: setup test lint demo

# Creates .venv with the full OpenMMLab stack (mmcv 2.1.0 is built once and cached in
# ~/.cache/mmrala) and installs mmrala in editable mode. Safe to run again.
setup:
	bash tools/setup_env.sh

# The quick start: set-up, then Mask R-CNN with RAVLT-T trained from scratch on the
# generated shapes dataset, its held-out box mAP against the demo's floor, and pictures.
demo: setup
	$(PYTHON) tools/run_demo.py maskrcnn

test:
	$(PYTHON) -m pytest

lint:
	$(PYTHON) -m ruff check mmrala tools tests configs
