# Mask R-CNN 1x (12 epochs, single scale) with RAVLT-B on COCO.
# Paper: box AP 51.2, mask AP 45.7 (COCO val2017); 67M parameters, 372G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/maskrcnn_ravlt_coco_1x.py', './_base_/variants/ravlt_b.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=51.2, mask_AP=45.7, params_M=67, flops_G=372)
