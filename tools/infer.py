"""Run a trained RAVLT model on one image and draw the result with the task library's own
visualiser: boxes and masks (mmdet), a segmentation map (mmseg) or the predicted class
(mmpretrain). The task comes from the config's default_scope; the checkpoint is loaded
strictly (:mod:`mmrala.mm.inference`).

    python tools/infer.py data/shapes/ade/images/validation/shapes_val_000001.jpg \
        configs/quickstart/fpn_ravlt_t_shapes.py work_dirs/quickstart_fpn/iter_700.pth \
        --out result.png
"""
from mmrala.mm.inference import infer_main

if __name__ == '__main__':
    infer_main()
