# RetinaNet 1x on COCO with a RAVLT backbone: the authors' recipe (RAVLT.md section 7).
# mmdet's RetinaNet R50-FPN 1x config supplies the detector (FPN start_level 1,
# add_extra_convs 'on_input', 5 levels), the 1333x800 pipeline and the 1x schedule.
# The configs in configs/ pick the variant.
_base_ = ['mmdet::retinanet/retinanet_r50_fpn_1x_coco.py', './ravlt_common.py']

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)

# All four stages go to the FPN as in the authors' code; with start_level 1 the stride-4
# output is computed but unused, hence find_unused_parameters (also the authors').
model = dict(
    backbone={{_base_.ravlt_dense_backbone}},
    neck=dict(start_level=1, add_extra_convs='on_input', num_outs=5))
find_unused_parameters = True

# The authors' RetinaNet optimiser: AdamW lr 1e-4, weight decay 1e-4, no paramwise rules.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-4))

auto_scale_lr = dict(enable=False, base_batch_size=16)

paper_results = dict(flops_input_shape=(800, 1280))
