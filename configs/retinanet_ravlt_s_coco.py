# RetinaNet 1x (12 epochs, single scale) with RAVLT-S on COCO.
# Paper: box AP 48.3 (COCO val2017); 34M parameters, 244G FLOPs at 1280x800
#   (convolutions only, as counted by mmcv).
_base_ = ['./_base_/retinanet_ravlt_coco_1x.py', './_base_/variants/ravlt_s.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=48.3, params_M=34, flops_G=244)
