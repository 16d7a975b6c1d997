# Cascade Mask R-CNN 3x (36 epochs, multi-scale) with RAVLT-S on COCO: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmdet's ConvNeXt Cascade Mask R-CNN config
# supplies the Swin / ConvNeXt style detector: three ConvFCBBoxHead stages with 4 shared
# convs and 1 fc (256 / 1024 channels), SyncBN in the heads, GIoU loss (weight 10) on
# decoded boxes, and the multi-scale 3x pipeline. Its ConvNeXt backbone, mixed precision
# and layer-wise lr decay are replaced by the authors' plain AdamW. The paper has no T
# model for this recipe: cascade_maskrcnn_ravlt_{b,l}_coco_3x.py inherit this file and
# change only the variant.
_base_ = [
    'mmdet::convnext/'
    'cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    './_base_/ravlt_common.py'
]
checkpoint_file = None  # the ConvNeXt checkpoint variable of the inherited config; unused

# The ConvNeXt config sets custom_imports (for mmpretrain's ConvNeXt), and mmengine refuses
# a key that two bases set, so ./_base_/mmrala_runtime.py cannot sit beside it: its three
# keys are set here instead.
custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
runner_type = 'MMRalaRunner'
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]

model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='s', drop_path_rate=0.15,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RAVLT_S.pth')),
    neck=dict(in_channels=[64, 128, 320, 512]))

# As in the authors' cascade configs: no weight decay on any norm layer (by type) nor on
# parameters whose name holds 'norm'.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = _base_.ravlt_coco_3x_param_scheduler

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (COCO val2017; FLOPs of the convolutions, as mmcv counts them, at
# flops_input_shape = (H, W)). Read by mmrala's tools only: see configs/README.md.
paper_results = dict(
    box_AP=54.2, mask_AP=46.8, params_M=82, flops_G=741, flops_input_shape=(800, 1280))
