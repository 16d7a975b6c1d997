# What the ADE20K configs (Semantic FPN, UperNet) start from besides mmseg's model and
# schedule: mmseg's ADE20K data (512x512 crops) and runtime, the shared RAVLT pieces and
# mmrala's runtime.
_base_ = [
    'mmseg::_base_/datasets/ade20k.py', 'mmseg::_base_/default_runtime.py',
    './ravlt_common.py', './mmrala_runtime.py'
]
