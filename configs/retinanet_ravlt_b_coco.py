# RetinaNet 1x with RAVLT-B on COCO: retinanet_ravlt_t_coco.py with the B variant.
_base_ = './retinanet_ravlt_t_coco.py'
pretrained = 'checkpoints/RAVLT_B.pth'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 512]))

paper_results = dict(box_AP=49.8, params_M=57, flops_G=353)
