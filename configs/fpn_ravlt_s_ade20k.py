# Semantic FPN 80k with RAVLT-S on ADE20K: fpn_ravlt_t_ade20k.py with the S variant.
_base_ = './fpn_ravlt_t_ade20k.py'
pretrained = 'checkpoints/RAVLT_S.pth'

model = dict(backbone=dict(arch='s', drop_path_rate=0.15, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[64, 128, 320, 512]))

paper_results = dict(mIoU=49.5, params_M=28, flops_G=180)
