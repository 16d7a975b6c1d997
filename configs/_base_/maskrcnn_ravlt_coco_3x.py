# Mask R-CNN 3x on COCO with a RAVLT backbone: the authors' recipe (RAVLT.md section 7).
# mmdet's Swin Mask R-CNN 3x config supplies the detector and the multi-scale training
# pipeline (short side 480-800, or resize 400-600, crop 384-600 and resize 480-800, as in
# DETR / Swin); its Swin backbone and optimiser are replaced. 36 epochs, lr x0.1 after
# epochs 27 and 33, batch 16. The configs in configs/ pick the variant.
_base_ = [
    'mmdet::swin/mask-rcnn_swin-t-p4-w7_fpn_ms-crop-3x_coco.py', './ravlt_common.py'
]

custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
pretrained = None  # the Swin checkpoint variable of the inherited config; unused

model = dict(backbone={{_base_.ravlt_dense_backbone}})

optim_wrapper = {{_base_.ravlt_coco_optim_wrapper}}
param_scheduler = {{_base_.ravlt_coco_3x_param_scheduler}}

auto_scale_lr = dict(enable=False, base_batch_size=16)

paper_results = dict(flops_input_shape=(800, 1280))
