# RetinaNet 1x with RAVLT-S on COCO: retinanet_ravlt_t_coco.py with the S variant.
_base_ = './retinanet_ravlt_t_coco.py'
pretrained = 'checkpoints/RAVLT_S.pth'

model = dict(backbone=dict(arch='s', drop_path_rate=0.15, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[64, 128, 320, 512]))

paper_results = dict(box_AP=48.3, params_M=34, flops_G=244)
