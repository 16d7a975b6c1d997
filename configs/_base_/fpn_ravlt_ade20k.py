# Semantic FPN on ADE20K with a RAVLT backbone: the authors' recipe (RAVLT.md section 7).
# mmseg's FPN model, ADE20K 512x512 data and 80k schedule, with the authors' optimiser:
# AdamW lr 1e-4, weight decay 1e-4, poly decay (power 0.9, down to 1e-6), 2 images per GPU
# on 8 GPUs. The configs in configs/ pick the variant.
_base_ = [
    'mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py',
    './ravlt_common.py'
]

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone={{_base_.ravlt_dense_backbone}},
    neck=dict(out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, weight_decay=1e-4),
    clip_grad=None)
param_scheduler = [
    dict(type='PolyLR', eta_min=1e-6, power=0.9, begin=0, end=80000, by_epoch=False)
]

train_dataloader = dict(batch_size=2)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=80000, val_interval=4000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=4000))

auto_scale_lr = dict(enable=False, base_batch_size=16)

paper_results = dict(flops_input_shape=(512, 2048))
