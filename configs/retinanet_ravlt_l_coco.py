# RetinaNet 1x with RAVLT-L on COCO: retinanet_ravlt_t_coco.py with the L variant.
_base_ = './retinanet_ravlt_t_coco.py'
pretrained = 'checkpoints/RAVLT_L.pth'

model = dict(backbone=dict(arch='l', drop_path_rate=0.55, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 448, 640]))

paper_results = dict(box_AP=50.9, params_M=104, flops_G=482)
