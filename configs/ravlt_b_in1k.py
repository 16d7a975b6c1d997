# RAVLT-B on ImageNet-1k: 300 epochs at 224x224, batch 1024.
# Paper: top-1 85.5%; 48M parameters, 9.9G FLOPs at 224x224.
_base_ = ['./_base_/ravlt_in1k.py', './_base_/variants/ravlt_b.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}}),
    neck=dict(in_channels={{_base_.ravlt.stage4_channels}}))

paper_results = dict(top1=85.5, params_M=48, flops_G=9.9)
