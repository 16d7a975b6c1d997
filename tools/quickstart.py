"""The quick start: RAVLT-T trained from random weights on the generated shapes dataset,
its held-out metric checked against the floor its config promises, and pictures of its
predictions (:mod:`mmrala.mm.quickstart`). ``make quickstart`` runs the first.

    python tools/quickstart.py             # Mask R-CNN, box mAP (about 9 min on 2 CPU cores)
    python tools/quickstart.py fpn         # Semantic FPN, mIoU
    python tools/quickstart.py cls         # classifier, top-1

Run it from the directory that should hold data/shapes/ and work_dirs/.
"""
import os.path as osp
import sys

from mmrala.mm.quickstart import main

CONFIGS = osp.join(osp.dirname(osp.dirname(osp.abspath(__file__))), 'configs', 'quickstart')

if __name__ == '__main__':
    sys.exit(main(configs_dir=CONFIGS))
