# RetinaNet 1x (12 epochs, single scale) with RAVLT-T on COCO: the authors' recipe
# (docs/architecture.md#7-training-recipes). mmdet's RetinaNet R50-FPN 1x config supplies
# the detector (FPN start_level 1, add_extra_convs 'on_input', 5 levels), the 1333x800
# pipeline and the 1x schedule. retinanet_ravlt_{s,b,l}_coco.py inherit this file and
# change only the variant.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './_base_/ravlt_common.py',
          './_base_/mmrala_runtime.py']

# All four stages go to the FPN as in the authors' code; with start_level 1 the stride-4
# output is computed but unused, hence find_unused_parameters (also the authors').
model = dict(
    backbone=dict(**_base_.ravlt_dense_backbone, arch='t', drop_path_rate=0.1,
                  init_cfg=dict(type='Pretrained', checkpoint='checkpoints/RAVLT_T.pth')),
    neck=dict(
        in_channels=[64, 128, 256, 512], start_level=1, add_extra_convs='on_input',
        num_outs=5))
find_unused_parameters = True

# The authors' RetinaNet optimiser: AdamW lr 1e-4, weight decay 1e-4, no paramwise rules.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# The paper's figures (COCO val2017; FLOPs of the convolutions, as mmcv counts them, at
# flops_input_shape = (H, W)). Read by mmrala's tools only: see configs/README.md.
paper_results = dict(box_AP=45.9, params_M=24, flops_G=201, flops_input_shape=(800, 1280))
