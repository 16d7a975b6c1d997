# UperNet (160k iterations, 512x512 crops) with RAVLT-S on ADE20K: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmseg's UperNet model (UPerHead 512 channels,
# pool scales 1, 2, 3, 6, auxiliary FCN head on stage 3), ADE20K 512x512 data and 160k
# iterations, with the authors' optimiser: AdamW lr 6e-5, weight decay 0.01 (none on
# parameters named 'norm'), 1500 iterations of linear warm-up, then linear (poly power 1)
# decay; 2 images per GPU on 8 GPUs. The paper has no T model for this recipe:
# upernet_ravlt_{b,l}_ade20k.py inherit this file and change only the variant.
_base_ = ['mmseg::_base_/models/upernet_r50.py', 'mmseg::_base_/schedules/schedule_160k.py',
          './_base_/ravlt_ade20k.py']

model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='s', drop_path_rate=0.15,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RAVLT_S.pth')),
    decode_head=dict(in_channels=[64, 128, 320, 512], num_classes=150),
    auxiliary_head=dict(in_channels=320, num_classes=150),
    # pad to the crop size; and no ImageNet ResNet from mmseg's model config (a segmentor
    # hands its `pretrained` to the backbone)
    data_preprocessor=dict(size=_base_.crop_size), pretrained=None)

optim_wrapper = dict(
    optimizer=dict(_delete_=True, type='AdamW', lr=6e-5, betas=(0.9, 0.999), weight_decay=0.01),
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

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (ADE20K val, single scale; it gives no FLOPs for UperNet).
# Read by mmrala's tools only: see configs/README.md.
paper_results = dict(mIoU=50.7, params_M=55, flops_input_shape=(512, 2048))
