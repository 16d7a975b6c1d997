# Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-S on COCO: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmdet's Swin Mask R-CNN 3x config supplies
# the detector and the multi-scale training pipeline (short side 480-800, or resize
# 400-600, crop 384-600 and resize 480-800, as in DETR / Swin); its Swin backbone and
# optimiser are replaced. 36 epochs, lr x0.1 after epochs 27 and 33, batch 16. The paper
# has no T model for this recipe: maskrcnn_ravlt_{b,l}_coco_3x.py inherit this file and
# change only the variant.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', './_base_/ravlt_common.py',
    './_base_/mmrala_runtime.py'
]
# the ImageNet file, under the name the inherited Swin config (and the variants) use
pretrained = 'checkpoints/RAVLT_S.pth'

model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='s', drop_path_rate=0.15,
                  init_cfg=dict(type='Pretrained', checkpoint=pretrained)),
    neck=dict(in_channels=[64, 128, 320, 512]))

optim_wrapper = _base_.ravlt_coco_optim_wrapper
param_scheduler = _base_.ravlt_coco_3x_param_scheduler

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (COCO val2017; FLOPs of the convolutions, as mmcv counts them, at
# flops_input_shape = (H, W)). Read by mmrala's tools only: see configs/README.md.
paper_results = dict(
    box_AP=51.4, mask_AP=45.5, params_M=44, flops_G=262, flops_input_shape=(800, 1280))
