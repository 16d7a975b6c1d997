# Mask R-CNN 1x with RAVLT-B on COCO: maskrcnn_ravlt_t_coco.py with the B variant.
_base_ = './maskrcnn_ravlt_t_coco.py'
pretrained = 'checkpoints/RAVLT_B.pth'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 384, 512]))

paper_results = dict(box_AP=51.2, mask_AP=45.7, params_M=67, flops_G=372)
