# Cascade Mask R-CNN 3x on COCO with a RAVLT backbone: the authors' recipe (RAVLT.md
# section 7). mmdet's ConvNeXt Cascade Mask R-CNN config supplies the Swin / ConvNeXt
# style detector: three ConvFCBBoxHead stages with 4 shared convs and 1 fc (256 / 1024
# channels), SyncBN in the heads, GIoU loss (weight 10) on decoded boxes, and the
# multi-scale 3x pipeline. Its ConvNeXt backbone, mixed precision and layer-wise lr decay
# are replaced by the authors' plain AdamW. The configs in configs/ pick the variant.
_base_ = [
    'mmdet::convnext/'
    'cascade-mask-rcnn_convnext-t-p4-w7_fpn_4conv1fc-giou_amp-ms-crop-3x_coco.py',
    './ravlt_common.py'
]

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
checkpoint_file = None  # the ConvNeXt checkpoint variable of the inherited config; unused

model = dict(backbone={{_base_.ravlt_dense_backbone}})

# As in the authors' cascade configs: no weight decay on any norm layer (by type) nor on
# parameters whose name holds 'norm'.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0., custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = {{_base_.ravlt_coco_3x_param_scheduler}}

auto_scale_lr = dict(enable=False, base_batch_size=16)

paper_results = dict(flops_input_shape=(800, 1280))
