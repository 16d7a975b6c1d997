# Semantic FPN (80k iterations, 512x512 crops) with RAVLT-L on ADE20K.
# Paper: mIoU 52.6 (ADE20K val, single scale); 98M parameters.
_base_ = ['./_base_/fpn_ravlt_ade20k.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(mIoU=52.6, params_M=98)
