# Mask R-CNN 1x on COCO with a RAVLT backbone: the authors' recipe (RAVLT.md section 7).
# mmdet's own Mask R-CNN R50-FPN 1x config supplies the detector, the single-scale
# 1333x800 pipeline, 2 images per GPU and the schedule, which already is the authors'
# (12 epochs, lr x0.1 after epochs 8 and 11, 500 warm-up iterations, batch 16).
# The configs in configs/ pick the variant.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py', './ravlt_common.py']

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)

model = dict(backbone={{_base_.ravlt_dense_backbone}})

optim_wrapper = {{_base_.ravlt_coco_optim_wrapper}}

# The authors trained with 8 GPUs x 2 images; --auto-scale-lr rescales lr to other batches.
auto_scale_lr = dict(enable=False, base_batch_size=16)

# Shape get_flops.py uses for the FLOPs the paper reports (H, W).
paper_results = dict(flops_input_shape=(800, 1280))
