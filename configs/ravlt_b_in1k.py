# RAVLT-B on ImageNet-1k: ravlt_t_in1k.py with the B variant (same last-stage channels).
_base_ = './ravlt_t_in1k.py'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4))

paper_results = dict(top1=85.5, params_M=48, flops_G=9.9)
