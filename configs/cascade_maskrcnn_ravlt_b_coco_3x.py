# Cascade Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-B on COCO.
# Paper: box AP 55.3, mask AP 47.7 (COCO val2017); 105M parameters, 851G FLOPs at
#   1280x800 (convolutions only, as counted by mmcv).
_base_ = ['./_base_/cascade_maskrcnn_ravlt_coco_3x.py', './_base_/variants/ravlt_b.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=55.3, mask_AP=47.7, params_M=105, flops_G=851)
