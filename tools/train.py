"""Train a RAVLT model with OpenMMLab's Runner: detection (mmdet), semantic segmentation
(mmseg) or ImageNet classification (mmpretrain); the config's default_scope decides.

    python tools/train.py configs/maskrcnn_ravlt_s_coco.py
    bash tools/dist_train.sh configs/maskrcnn_ravlt_s_coco.py 8 [--amp]

mmdet's, mmseg's and mmpretrain's own tools/train.py train these configs the same way:
the guarantees live in the configs' runner and hooks (mmrala/mm/runtime.py).
"""
from mmrala.mm.cli import train_main

if __name__ == '__main__':
    train_main()
