# Pieces that several RAVLT recipes share. Only plain variables with a `ravlt_` prefix live
# here, so this file can sit beside any mmdet / mmseg base in a `_base_` list; the configs
# use them as `_base_.ravlt_...`.

# The backbone of the authors' detection and segmentation code, replacing the inherited
# config's ResNet: all four stages out, each through its own LayerNorm; SyncBN (plain BN
# on one device or a CPU-only machine, see mmrala_runtime.py) with frozen statistics
# (norm_eval). Each config adds the variant: arch, drop_path_rate and the ImageNet file.
ravlt_dense_backbone = dict(
    _delete_=True,
    type='RAVLT',
    out_indices=(0, 1, 2, 3),
    out_norm=True,
    norm_cfg=dict(type='SyncBN', requires_grad=True),
    norm_eval=True)

# COCO Mask R-CNN (1x and 3x): AdamW lr 1e-4, weight decay 0.05, no decay on the
# parameters whose name holds 'norm' (as in the authors' configs).
ravlt_coco_optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))

# COCO 3x: 36 epochs, lr x0.1 after epochs 27 and 33, 500 iterations of linear warm-up.
ravlt_coco_3x_param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(
        type='MultiStepLR',
        begin=0,
        end=36,
        by_epoch=True,
        milestones=[27, 33],
        gamma=0.1)
]
