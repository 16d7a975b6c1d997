# Mask R-CNN 1x (12 epochs, single scale) with RAVLT-T on COCO: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmdet's Mask R-CNN R50-FPN 1x config supplies
# the detector, the single-scale 1333x800 pipeline, 2 images per GPU and the schedule,
# which already is the authors' (12 epochs, lr x0.1 after epochs 8 and 11, 500 warm-up
# iterations, batch 16). maskrcnn_ravlt_{s,b,l}_coco.py inherit this file and change only
# the variant.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './_base_/ravlt_common.py',
          './_base_/mmrala_runtime.py']

model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='t', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512]))

optim_wrapper = _base_.ravlt_coco_optim_wrapper

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (COCO val2017; FLOPs of the convolutions, as mmcv counts them, at
# flops_input_shape = (H, W)). Read by mmrala's tools only: see configs/README.md.
paper_results = dict(
    box_AP=47.3, mask_AP=42.7, params_M=33, flops_G=219, flops_input_shape=(800, 1280))
