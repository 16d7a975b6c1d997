# Quick start: Mask R-CNN with RAVLT-T, from random weights, on the embedded shapes
# dataset in COCO format (tools/make_shapes_dataset.py); trains and evaluates in about 10
# minutes on 2 CPU cores. The README's first command.
#
#   python tools/quickstart.py                 # data, training, held-out mAP, pictures
#
# Inherits the real COCO config. Overridden: the data (root, 4 classes, the 160x160
# images resized to 128x128), the batch, an iteration-based schedule, no pretrained
# file, out_norm (see below) and the head widths: FPN and RoI heads at 64 channels and a
# 2-conv mask head instead of 256 channels and 4 convs, which on a CPU cost 3x the
# backbone's time per iteration.
_base_ = ['../maskrcnn_ravlt_t_coco.py']

# Read by tools/quickstart.py only (configs/README.md): where the shapes dataset goes,
# and the held-out box mAP below which the quick start fails (measured in the README).
quickstart_data = 'data/shapes'
quickstart_floor = dict(metric='coco/bbox_mAP', value=0.4)

data_root = quickstart_data + '/coco/'
classes = ('circle', 'triangle', 'square', 'star')
metainfo = dict(classes=classes,
                palette=[(220, 20, 60), (120, 200, 0), (0, 170, 230), (150, 60, 230)])
img_scale = (128, 128)
head_channels = 64

model = dict(
    # random weights: the BatchNorm statistics must be learnt, not frozen. out_norm=False:
    # from random weights the per-output LayerNorms keep the RoI heads at the class
    # prior (loss_cls ~0.9 after 750 iterations); without them they learn as with a
    # ResNet-18 (loss_cls 0.47, loss_mask 0.42 after 150 iterations). The released
    # configs keep them: the authors' ImageNet weights are trained to feed them.
    backbone=dict(init_cfg=None, drop_path_rate=0.0, norm_eval=False, out_norm=False),
    neck=dict(out_channels=head_channels),
    rpn_head=dict(in_channels=head_channels, feat_channels=head_channels),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=head_channels),
        bbox_head=dict(in_channels=head_channels, fc_out_channels=256,
                       num_classes=len(classes)),
        mask_roi_extractor=dict(out_channels=head_channels),
        mask_head=dict(in_channels=head_channels, conv_out_channels=head_channels,
                       num_convs=2, num_classes=len(classes))),
    # a few objects per small image: fewer proposals and sampled RoIs
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

# 500 iterations of batch 4 (one pass over the 2000 images): 100 iterations of
# warm-up, then cosine decay; evaluation on the 100 held-out images at the end.
max_iters = 500
train_cfg = dict(_delete_=True, type='IterBasedTrainLoop', max_iters=max_iters,
                 val_interval=max_iters)
optim_wrapper = dict(optimizer=dict(lr=2e-4), clip_grad=dict(max_norm=5.0))
param_scheduler = [
    dict(type='LinearLR', start_factor=0.01, by_epoch=False, begin=0, end=100),
    dict(type='CosineAnnealingLR', eta_min=1e-6, by_epoch=False, begin=100, end=max_iters),
]
default_hooks = dict(logger=dict(interval=25),
                     checkpoint=dict(by_epoch=False, interval=max_iters, max_keep_ckpts=1))
log_processor = dict(by_epoch=False)
randomness = dict(seed=0)
