# UperNet (160k iterations, 512x512 crops) with RAVLT-L on ADE20K.
# Paper: mIoU 53.2 (ADE20K val, single scale); 125M parameters.
_base_ = ['./_base_/upernet_ravlt_ade20k.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    decode_head=dict(in_channels={{_base_.ravlt.channels}}),
    auxiliary_head=dict(in_channels={{_base_.ravlt.stage3_channels}}))

paper_results = dict(mIoU=53.2, params_M=125)
