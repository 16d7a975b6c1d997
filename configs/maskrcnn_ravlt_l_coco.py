# Mask R-CNN 1x (12 epochs, single scale) with RAVLT-L on COCO.
# Paper: box AP 52.3, mask AP 46.4 (COCO val2017); 114M parameters, 501G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_1x.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=52.3, mask_AP=46.4, params_M=114, flops_G=501)
