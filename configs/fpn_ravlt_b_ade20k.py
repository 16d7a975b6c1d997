# Semantic FPN 80k with RAVLT-B on ADE20K: fpn_ravlt_t_ade20k.py with the B variant.
_base_ = './fpn_ravlt_t_ade20k.py'
pretrained = 'checkpoints/RAVLT_B.pth'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 512]))

paper_results = dict(mIoU=51.9, params_M=51, flops_G=292)
