# Cascade Mask R-CNN 3x with RAVLT-L on COCO: cascade_maskrcnn_ravlt_s_coco_3x.py with the
# L variant.
_base_ = './cascade_maskrcnn_ravlt_s_coco_3x.py'
pretrained = 'checkpoints/RAVLT_L.pth'

model = dict(backbone=dict(arch='l', drop_path_rate=0.55, init_cfg=dict(checkpoint=pretrained)),
             neck=dict(in_channels=[96, 192, 448, 640]))

paper_results = dict(box_AP=55.6, mask_AP=48.0, params_M=152, flops_G=979)
