"""Generate the quick start's shapes dataset: four shape classes in COCO, ADE20K-layout
and class-folder formats, byte for byte the same for the same arguments
(:mod:`mmrala.synthetic_data`).

    python tools/make_shapes_dataset.py                 # data/shapes, default sizes
    python tools/make_shapes_dataset.py --out DIR --num-train 40 --num-val 10 --force

tools/quickstart.py runs it by itself; it skips the work when DIR/DONE records the same
arguments, and deletes only a folder it wrote.
"""
from mmrala.synthetic_data import main

if __name__ == '__main__':
    main()
