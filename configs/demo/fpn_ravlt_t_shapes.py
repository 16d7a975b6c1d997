# NOT TUNED YET (issue 5): the schedule and sizes below are a first attempt; the
# Mask R-CNN one reached only bbox mAP 0.002 after 225 iterations from random weights.
# No metric floor is claimed for any demo config until one is measured.
# Demo: Semantic FPN with RAVLT-T on the embedded shapes dataset, ADE20K folder layout
# (tools/make_shapes_dataset.py), small enough to train and evaluate on a 2-core CPU in
# about 10 minutes. Inherits the real ADE20K config; overrides only the data (root,
# classes, 160x160 images, 128x128 crops), batch, schedule and the pretrained file (none).
#
#   python tools/make_shapes_dataset.py      # data/shapes/, once (seconds)
#   python tools/train.py configs/demo/fpn_ravlt_t_shapes.py
#
# Label maps follow ADE20K: 0 unlabelled (ignored), 1 background, 2..5 the shapes;
# reduce_zero_label=True maps them to the 5 classes below (and 0 to 255, ignored).
# ADE20KDataset carries ADE's 150 class names, so the demo reads the same layout with
# mmseg's BaseSegDataset (the class ADE20KDataset derives from) and its own classes.
_base_ = ['../fpn_ravlt_t_ade20k.py']

data_root = 'data/shapes/ade/'
metainfo = dict(
    classes=('background', 'circle', 'triangle', 'square', 'star'),
    palette=[(0, 0, 0), (220, 20, 60), (0, 130, 230), (250, 170, 30), (20, 200, 80)])
crop_size = (128, 128)

model = dict(
    data_preprocessor=dict(size=crop_size),
    backbone=dict(init_cfg=None, drop_path_rate=0.0),
    decode_head=dict(num_classes=5))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='RandomResize', scale=(160, 160), ratio_range=(0.75, 1.5), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(160, 160), keep_ratio=True),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
dataset = dict(type='BaseSegDataset', data_root=data_root, metainfo=metainfo,
               img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=True)
train_dataloader = dict(
    batch_size=8, num_workers=1,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training',
                                             seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

# Schedule: 600 iterations of batch 8 (16 passes over the 300 images), poly decay.
max_iters = 600
optim_wrapper = dict(optimizer=dict(lr=6e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
