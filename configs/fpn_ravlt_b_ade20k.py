# Semantic FPN (80k iterations, 512x512 crops) with RAVLT-B on ADE20K.
# Paper: mIoU 51.9 (ADE20K val, single scale); 51M parameters, 292G FLOPs at 2048x512
#   (convolutions only, as counted by mmcv).
_base_ = ['./_base_/fpn_ravlt_ade20k.py', './_base_/variants/ravlt_b.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(mIoU=51.9, params_M=51, flops_G=292)
