# Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-B on COCO.
# Paper: box AP 52.7, mask AP 46.4 (COCO val2017); 67M parameters, 372G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_3x.py', './_base_/variants/ravlt_b.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=52.7, mask_AP=46.4, params_M=67, flops_G=372)
