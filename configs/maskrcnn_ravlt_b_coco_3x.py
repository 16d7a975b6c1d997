# Mask R-CNN 3x with RAVLT-B on COCO: maskrcnn_ravlt_s_coco_3x.py with the B variant.
_base_ = './maskrcnn_ravlt_s_coco_3x.py'
pretrained = 'checkpoints/RAVLT_B.pth'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 512]))

paper_results = dict(box_AP=52.7, mask_AP=46.4, params_M=67, flops_G=372)
