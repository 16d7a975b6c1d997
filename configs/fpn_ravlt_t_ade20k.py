# Semantic FPN (80k iterations, 512x512 crops) with RAVLT-T on ADE20K: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmseg's FPN model, ADE20K 512x512 data and
# 80k schedule, with the authors' optimiser: AdamW lr 1e-4, weight decay 1e-4, poly decay
# (power 0.9, down to 1e-6), 2 images per GPU on 8 GPUs. fpn_ravlt_{s,b,l}_ade20k.py
# inherit this file and change only the variant.
_base_ = ['mmseg::_base_/models/fpn_r50.py', 'mmseg::_base_/schedules/schedule_80k.py',
          './_base_/ravlt_ade20k.py']

model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='t', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RAVLT_T.pth')),
    neck=dict(in_channels=[64, 128, 256, 512], out_channels=256, num_outs=4),
    decode_head=dict(num_classes=150),
    # pad to the crop size; and no ImageNet ResNet from mmseg's model config (a segmentor
    # hands its `pretrained` to the backbone)
    data_preprocessor=dict(size=_base_.crop_size), pretrained=None)

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

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (ADE20K val, single scale; FLOPs of the convolutions, as mmcv counts
# them, at flops_input_shape = (H, W)). Read by mmrala's tools only: see configs/README.md.
paper_results = dict(mIoU=47.9, params_M=18, flops_G=136, flops_input_shape=(512, 2048))
