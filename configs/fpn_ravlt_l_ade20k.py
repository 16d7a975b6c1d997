# Semantic FPN 80k with RAVLT-L on ADE20K: fpn_ravlt_t_ade20k.py with the L variant.
_base_ = './fpn_ravlt_t_ade20k.py'
pretrained = 'checkpoints/RAVLT_L.pth'

model = dict(backbone=dict(arch='l', drop_path_rate=0.55, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 448, 640]))

paper_results = dict(mIoU=52.6, params_M=98, flops_G=None)  # the paper gives no FLOPs
