# UperNet on ADE20K with a RAVLT backbone: the authors' recipe (RAVLT.md section 7).
# mmseg's UperNet model (UPerHead 512 channels, pool scales 1, 2, 3, 6, auxiliary FCN head
# on stage 3), ADE20K 512x512 data and 160k iterations, with the authors' optimiser:
# AdamW lr 6e-5, weight decay 0.01 (none on parameters named 'norm'), 1500 iterations of
# linear warm-up, then linear (poly power 1) decay; 2 images per GPU on 8 GPUs.
# The configs in configs/ pick the variant.
_base_ = [
    'mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/datasets/ade20k.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_160k.py',
    './ravlt_common.py'
]

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)

crop_size = (512, 512)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone={{_base_.ravlt_dense_backbone}},
    decode_head=dict(num_classes=150),
    auxiliary_head=dict(num_classes=150))

optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
    paramwise_cfg=dict(custom_keys={'norm': dict(decay_mult=0.)}))
param_scheduler = [
    dict(type='LinearLR', start_factor=1e-6, by_epoch=False, begin=0, end=1500),
    dict(
        type='PolyLR',
        eta_min=0.0,
        power=1.0,
        begin=1500,
        end=160000,
        by_epoch=False)
]

train_dataloader = dict(batch_size=2)
train_cfg = dict(type='IterBasedTrainLoop', max_iters=160000, val_interval=8000)
default_hooks = dict(checkpoint=dict(by_epoch=False, interval=8000))

auto_scale_lr = dict(enable=False, base_batch_size=16)

paper_results = dict(flops_input_shape=(512, 2048))
