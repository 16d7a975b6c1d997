"""Evaluate a checkpoint with OpenMMLab's Runner: COCO box / mask mAP (mmdet), mIoU
(mmseg) or top-1 / top-5 accuracy (mmpretrain); the config's default_scope decides.

    python tools/test.py configs/maskrcnn_ravlt_s_coco.py work_dirs/.../epoch_12.pth
    bash tools/dist_test.sh configs/maskrcnn_ravlt_s_coco.py CKPT 8 --out results.pkl

The metrics are logged and written to WORK_DIR/TIMESTAMP/TIMESTAMP.json. The checkpoint
is loaded strictly: every weight of the model must be in it, with its shape.
"""
from mmrala.mm.cli import test_main

if __name__ == '__main__':
    test_main()
