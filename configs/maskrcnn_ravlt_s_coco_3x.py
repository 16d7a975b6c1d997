# Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-S on COCO.
# Paper: box AP 51.4, mask AP 45.5 (COCO val2017); 44M parameters, 262G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_3x.py', './_base_/variants/ravlt_s.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=51.4, mask_AP=45.5, params_M=44, flops_G=262)
