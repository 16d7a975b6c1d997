# Quick start: RAVLT-T classifier trained from random weights on the embedded shapes
# dataset, ImageNet-style class folders (tools/make_shapes_dataset.py); trains and
# evaluates in about 5 minutes on 2 CPU cores.
#
#   python tools/quickstart.py cls             # data, training, held-out top-1, pictures
#
# Inherits the real ImageNet config and overrides only the data (4 classes, 64x64
# images), the batch, the schedule, and drops mixup / cutmix / RandAugment / random
# erasing (they pay off over hundreds of epochs, not five). mmpretrain's ImageNet dataset
# expects the 1000 ImageNet classes, so the quick start reads the same folder layout
# (split/<class>/*.JPEG) with CustomDataset, which takes the classes from the folder
# names (sorted: circle, square, star, triangle).
_base_ = ['../ravlt_t_in1k.py']

# Read by tools/quickstart.py only (configs/README.md): where the shapes dataset goes,
# and the held-out top-1 (%) below which the quick start fails (measured in the README).
quickstart_data = 'data/shapes'
quickstart_floor = dict(metric='accuracy/top1', value=60.0)

data_root = quickstart_data + '/cls/'
size = 64

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
    batch_size=50, num_workers=1,
    dataset=dict(_delete_=True, type='CustomDataset', data_root=data_root,
                 data_prefix='val', pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(type='Accuracy', topk=(1, ))
test_evaluator = val_evaluator

# 3 epochs of 63 iterations (2000 images, batch 32): 30 iterations of warm-up, then
# cosine decay. lr 5e-4 at batch 32: from random weights, 1e-3 stalls at chance.
max_epochs = 3
optim_wrapper = dict(optimizer=dict(lr=5e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=30),
    dict(type='CosineAnnealingLR', eta_min=1e-5, by_epoch=True, begin=0, end=max_epochs,
         convert_to_iter_based=True)
]
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
default_hooks = dict(logger=dict(interval=10),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
