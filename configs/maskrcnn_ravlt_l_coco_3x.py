# Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-L on COCO.
# Paper: box AP 53.6, mask AP 47.3 (COCO val2017); 114M parameters, 501G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_3x.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=53.6, mask_AP=47.3, params_M=114, flops_G=501)
