# RAVLT-S on ImageNet-1k: 300 epochs at 224x224, batch 1024.
# Paper: top-1 84.4%; 26M parameters, 4.6G FLOPs at 224x224.
_base_ = ['./_base_/ravlt_in1k.py', './_base_/variants/ravlt_s.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}}),
    neck=dict(in_channels={{_base_.ravlt.stage4_channels}}))

paper_results = dict(top1=84.4, params_M=26, flops_G=4.6)
