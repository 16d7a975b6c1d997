# RetinaNet 1x (12 epochs, single scale) with RAVLT-L on COCO.
# Paper: box AP 50.9 (COCO val2017); 104M parameters, 482G FLOPs at 1280x800
#   (convolutions only, as counted by mmcv).
_base_ = ['./_base_/retinanet_ravlt_coco_1x.py', './_base_/variants/ravlt_l.py']

model = dict(
    backbone=dict(
        arch={{_base_.ravlt.arch}},
        drop_path_rate={{_base_.ravlt.drop_path_rate}},
        init_cfg=dict(checkpoint={{_base_.ravlt.checkpoint}})),
    neck=dict(in_channels={{_base_.ravlt.channels}}))

paper_results = dict(box_AP=50.9, params_M=104, flops_G=482)
