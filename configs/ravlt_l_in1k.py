# RAVLT-L on ImageNet-1k: ravlt_t_in1k.py with the L variant.
_base_ = './ravlt_t_in1k.py'

model = dict(
    backbone=dict(arch='l', drop_path_rate=0.55),
    neck=dict(in_channels=640))

paper_results = dict(top1=85.8, params_M=95, flops_G=16.0)
