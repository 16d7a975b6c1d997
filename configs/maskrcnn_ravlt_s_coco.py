# Mask R-CNN 1x (12 epochs, single scale) with RAVLT-S on COCO.
# Paper: box AP 49.8, mask AP 44.6 (COCO val2017); 44M parameters, 262G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_1x.py', './_base_/variants/ravlt_s.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=49.8, mask_AP=44.6, params_M=44, flops_G=262)
