# RAVLT-S on ImageNet-1k: ravlt_t_in1k.py with the S variant (same last-stage channels).
_base_ = './ravlt_t_in1k.py'

model = dict(backbone=dict(arch='s', drop_path_rate=0.15))

paper_results = dict(top1=84.4, params_M=26, flops_G=4.6)
