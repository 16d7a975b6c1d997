# RAVLT-L on ImageNet-1k: 300 epochs at 224x224, batch 1024.
# Paper: top-1 85.8%; 95M parameters, 16.0G FLOPs at 224x224.
_base_ = ['./_base_/ravlt_in1k.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}}),
    neck=dict(in_channels={{_base_.ravlt.stage4_channels}}))

paper_results = dict(top1=85.8, params_M=95, flops_G=16.0)
