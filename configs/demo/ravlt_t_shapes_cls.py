# NOT TUNED YET (issue 5): the schedule and sizes below are a first attempt; the
# Mask R-CNN one reached only bbox mAP 0.002 after 225 iterations from random weights.
# No metric floor is claimed for any demo config until one is measured.
# Demo: RAVLT-T classifier on the embedded shapes dataset, ImageNet-style class folders
# (tools/make_shapes_dataset.py), small enough to train and evaluate on a 2-core CPU in
# about 10 minutes. Inherits the real ImageNet config; overrides only the data (root,
# 4 classes, 96x96 images), batch, schedule, and drops mixup / cutmix / RandAugment /
# random erasing (they need hundreds of epochs to pay off).
#
#   python tools/make_shapes_dataset.py      # data/shapes/, once (seconds)
#   python tools/train.py configs/demo/ravlt_t_shapes_cls.py
#
# mmpretrain's ImageNet dataset expects the 1000 ImageNet classes, so the demo reads the
# same folder layout (split/<class>/*.JPEG) with CustomDataset, which takes the classes
# from the folder names (sorted: circle, square, star, triangle).
_base_ = ['../ravlt_t_in1k.py']

data_root = 'data/shapes/cls/'
size = 96

model = dict(
    backbone=dict(drop_path_rate=0.0),
    head=dict(num_classes=4, topk=(1, )),
    train_cfg=None)
data_preprocessor = dict(num_classes=4)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='RandomResizedCrop', scale=size, crop_ratio_range=(0.6, 1.0),
         backend='pillow', interpolation='bicubic'),
    dict(type='RandomFlip', prob=0.5, direction='horizontal'),
    dict(type='PackInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='ResizeEdge', scale=size, edge='short', backend='pillow',
         interpolation='bicubic'),
    dict(type='CenterCrop', crop_size=size),
    dict(type='PackInputs'),
]
train_dataloader = dict(
    batch_size=32, num_workers=1,
    sampler=dict(_delete_=True, type='DefaultSampler', shuffle=True),
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='train', pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=32, num_workers=1,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# Schedule: 30 epochs of 10 iterations (300 images, batch 32), warm-up then cosine.
max_epochs = 30
optim_wrapper = dict(optimizer=dict(lr=1e-3))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=True, begin=0, end=3,
         convert_to_iter_based=True),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=3, end=max_epochs)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
