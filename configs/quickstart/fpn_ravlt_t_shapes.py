# Quick start: Semantic FPN with RAVLT-T, from random weights, on the embedded shapes
# dataset in the ADE20K folder layout (tools/make_shapes_dataset.py); trains and
# evaluates in about 9 minutes on 2 CPU cores.
#
#   python tools/quickstart.py fpn             # data, training, held-out mIoU, pictures
#
# Inherits the real ADE20K config; overrides only the data (root, classes, 160x160
# images, 128x128 crops), the batch, the schedule and the pretrained file (none).
# Label maps follow ADE20K: 0 unlabelled (ignored), 1 background, 2..5 the shapes;
# reduce_zero_label=True maps them to the 5 classes below (and 0 to 255, ignored).
# ADE20KDataset carries ADE's 150 class names, so the quick start reads the same layout
# with mmseg's BaseSegDataset (the class ADE20KDataset derives from) and its own classes.
_base_ = ['../fpn_ravlt_t_ade20k.py']

# Read by tools/quickstart.py only (configs/README.md): where the shapes dataset goes,
# and the held-out mIoU (%) below which the quick start fails (measured in the README).
quickstart_data = 'data/shapes'
quickstart_floor = dict(metric='mIoU', value=40.0)

data_root = quickstart_data + '/ade/'
metainfo = dict(
    classes=('background', 'circle', 'triangle', 'square', 'star'),
    palette=[(0, 0, 0), (220, 20, 60), (120, 200, 0), (0, 170, 230), (150, 60, 230)])
crop_size = (128, 128)

model = dict(
    data_preprocessor=dict(size=crop_size),
    # random weights: the BatchNorm statistics must be learnt, not frozen
    backbone=dict(init_cfg=None, drop_path_rate=0.0, norm_eval=False),
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
    batch_size=4, num_workers=1,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/training',
                                             seg_map_path='annotations/training'),
                 pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=1,
    dataset=dict(**dataset, data_prefix=dict(img_path='images/validation',
                                             seg_map_path='annotations/validation'),
                 pipeline=test_pipeline))
test_dataloader = val_dataloader

# 400 iterations of batch 4 (0.8 passes over the 2000 images): 50 iterations of
# warm-up, then poly decay.
max_iters = 400
optim_wrapper = dict(optimizer=dict(lr=2e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=50, end=max_iters, by_epoch=False)
]
train_cfg = dict(max_iters=max_iters, val_interval=max_iters)
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_iters, max_keep_ckpts=1))
randomness = dict(seed=0)
