# Semantic FPN (80k iterations, 512x512 crops) with RAVLT-T on ADE20K.
# Paper: mIoU 47.9 (ADE20K val, single scale); 18M parameters, 136G FLOPs at 2048x512
#   (convolutions only, as counted by mmcv).
_base_ = ['./_base_/fpn_ravlt_ade20k.py', './_base_/variants/ravlt_t.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(mIoU=47.9, params_M=18, flops_G=136)
