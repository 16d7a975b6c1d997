# NOT TUNED YET (issue 5): the schedule and sizes below are a first attempt; the
# Mask R-CNN one reached only bbox mAP 0.002 after 225 iterations from random weights.
# No metric floor is claimed for any demo config until one is measured.
# Demo: Mask R-CNN with RAVLT-T on the embedded shapes dataset (tools/make_shapes_dataset.py),
# small enough to train and evaluate on a 2-core CPU in about 10 minutes.
# Inherits the real COCO config; overrides only the data (root, classes, 160x160 images),
# batch, schedule and the pretrained file (none: the backbone starts from random weights).
#
#   python tools/make_shapes_dataset.py      # data/shapes/, once (seconds)
#   python tools/train.py configs/demo/maskrcnn_ravlt_t_shapes.py
_base_ = ['../maskrcnn_ravlt_t_coco.py']

data_root = 'data/shapes/coco/'
classes = ('circle', 'triangle', 'square', 'star')
metainfo = dict(classes=classes,
                palette=[(220, 20, 60), (0, 130, 230), (250, 170, 30), (20, 200, 80)])
img_scale = (128, 128)  # the generated 160x160 images, resized

model = dict(
    backbone=dict(init_cfg=None, drop_path_rate=0.0),
    roi_head=dict(bbox_head=dict(num_classes=len(classes)),
                  mask_head=dict(num_classes=len(classes))),
    # few objects per small image: fewer proposals and sampled RoIs (RoIAlign's CPU
    # backward dominates the iteration time otherwise)
    train_cfg=dict(rpn_proposal=dict(nms_pre=1000, max_per_img=300),
                   rcnn=dict(sampler=dict(num=64))),
    test_cfg=dict(rpn=dict(nms_pre=500, max_per_img=100)))

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='PackDetInputs',
         meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor')),
]
train_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_train.json',
                 data_prefix=dict(img='train/'), pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=4, num_workers=1,
    dataset=dict(data_root=data_root, metainfo=metainfo,
                 ann_file='annotations/instances_val.json',
                 data_prefix=dict(img='val/'), pipeline=test_pipeline))
test_dataloader = val_dataloader
val_evaluator = dict(ann_file=data_root + 'annotations/instances_val.json')
test_evaluator = val_evaluator

# Schedule: 3 epochs of 75 iterations (300 images, batch 4) at a constant lr after a
# 50-iteration warm-up; evaluation on the 60 held-out images at the end.
max_epochs = 3
train_cfg = dict(max_epochs=max_epochs, val_interval=max_epochs)
optim_wrapper = dict(optimizer=dict(lr=3e-4))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=50),
]
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(interval=max_epochs, max_keep_ckpts=1))
randomness = dict(seed=0)
