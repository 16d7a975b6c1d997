# RAVLT-T on ImageNet-1k: the authors' 300-epoch DeiT-style recipe at 224x224, batch 1024
# (docs/architecture.md#7-training-recipes). mmpretrain's Swin data pipeline is that
# recipe's augmentation (random resized crop 224 bicubic, flip, RandAugment m9-mstd0.5,
# random erasing 0.25; test: resize 256, center crop 224) and its AdamW schedule is the
# authors' optimiser (lr 5e-4 x 1024/512, weight decay 0.05, no decay on norms and biases,
# cosine to 1e-5). ravlt_{s,b,l}_in1k.py inherit this file and change only the variant.
_base_ = [
    'mmpretrain::_base_/datasets/imagenet_bs64_swin_224.py',
    'mmpretrain::_base_/schedules/imagenet_bs1024_adamw_swin.py',
    'mmpretrain::_base_/default_runtime.py',
    './_base_/mmrala_runtime.py'
]

# The authors' classifier: RAVLT's last stage, then 1x1 conv to 1024, BN, Swish, global
# average pooling (RAVLTClsNeck) and a linear layer (LinearClsHead). Label smoothing 0.1,
# mixup 0.8 / cutmix 1.0 (one of the two per batch). BN layers are SyncBN on several
# GPUs, as in the authors' training.
model = dict(
    type='ImageClassifier',
    backbone=dict(
        type='RAVLT',
        arch='t',
        drop_path_rate=0.1,
        out_indices=(3, ),
        out_norm=False,
        norm_cfg=dict(type='SyncBN', requires_grad=True),
        init_cfg=None),
    neck=dict(
        type='RAVLTClsNeck',
        in_channels=512,  # the last stage's channels
        mid_channels=1024,
        norm_cfg=dict(type='SyncBN', requires_grad=True)),
    head=dict(
        type='LinearClsHead',
        num_classes=1000,
        in_channels=1024,
        loss=dict(type='LabelSmoothLoss', label_smooth_val=0.1, mode='original'),
        init_cfg=dict(type='TruncNormal', layer='Linear', std=0.02, bias=0.),
        cal_acc=False),
    train_cfg=dict(augments=[
        dict(type='Mixup', alpha=0.8),
        dict(type='CutMix', alpha=1.0)
    ]))

# 8 GPUs x 128 images = the authors' batch of 1024. The authors' DeiT code samples with
# repeated augmentation (its default), which RepeatAugSampler reproduces.
train_dataloader = dict(
    batch_size=128, sampler=dict(type='RepeatAugSampler', shuffle=True))
val_dataloader = dict(batch_size=64)
test_dataloader = val_dataloader

# 5 warm-up epochs from lr 1e-6, then cosine decay to 1e-5 at epoch 300. `end` is
# explicit so that a shorter run (--cfg-options train_cfg.max_epochs=...) keeps the
# authors' learning-rate curve.
optim_wrapper = dict(optimizer=dict(lr=5e-4 * 1024 / 512))
param_scheduler = [
    dict(
        type='LinearLR',
        start_factor=1e-3,
        by_epoch=True,
        begin=0,
        end=5,
        convert_to_iter_based=True),
    dict(
        type='CosineAnnealingLR',
        eta_min=1e-5,
        by_epoch=True,
        begin=5,
        end=300)
]
train_cfg = dict(by_epoch=True, max_epochs=300, val_interval=1)

auto_scale_lr = dict(base_batch_size=1024)

# The paper's figures (top-1 %, FLOPs at flops_input_shape = (H, W)). Read by mmrala's
# tools only: see configs/README.md.
paper_results = dict(top1=82.8, params_M=15, flops_G=2.4, flops_input_shape=(224, 224))
