"""The embedded shapes dataset (tools/make_shapes_dataset.py): deterministic, in the real
formats, and read by the demo configs' own datasets."""
from __future__ import annotations

import hashlib
import os.path as osp
import sys

import numpy as np
import pytest
from PIL import Image

REPO = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, osp.join(REPO, 'tools'))

from make_shapes_dataset import (  # noqa: E402
    CLASS_HUE_CENTRES,
    CLASS_HUE_HALF_WIDTH,
    CLASSES,
    make_shapes_dataset,
)


def _digest(root):
    h = hashlib.sha256()
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        h.update(str(path.relative_to(root)).encode())
        h.update(path.read_bytes())
    return h.hexdigest()


@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    return make_shapes_dataset(tmp_path_factory.mktemp('shapes') / 'shapes', num_train=8,
                               num_val=4, size=(96, 96), cls_size=(64, 64), seed=3)


def test_same_seed_same_bytes(shapes, tmp_path):
    again = make_shapes_dataset(tmp_path / 'again', num_train=8, num_val=4, size=(96, 96),
                                cls_size=(64, 64), seed=3)
    assert _digest(shapes) == _digest(again)
    other = make_shapes_dataset(tmp_path / 'other', num_train=8, num_val=4, size=(96, 96),
                                cls_size=(64, 64), seed=4)
    assert _digest(shapes) != _digest(other)


def test_second_call_skips(shapes, capsys):
    make_shapes_dataset(shapes, num_train=8, num_val=4, size=(96, 96), cls_size=(64, 64),
                        seed=3)
    assert 'already in' in capsys.readouterr().out


def test_coco_polygons_match_boxes(shapes):
    from pycocotools.coco import COCO
    coco = COCO(str(shapes / 'coco' / 'annotations' / 'instances_val.json'))
    assert [c['name'] for c in coco.loadCats(coco.getCatIds())] == list(CLASSES)
    assert len(coco.getImgIds()) == 4 and len(coco.getAnnIds()) >= 4
    for ann in coco.loadAnns(coco.getAnnIds()):
        assert isinstance(ann['segmentation'], list)  # polygons, not RLE
        mask = coco.annToMask(ann)
        ys, xs = np.nonzero(mask)
        x, y, w, h = ann['bbox']
        assert abs(xs.min() - x) <= 1.5 and abs(ys.min() - y) <= 1.5
        assert abs(xs.max() + 1 - (x + w)) <= 1.5 and abs(ys.max() + 1 - (y + h)) <= 1.5


def test_shape_colours_come_from_their_class_hue_family(shapes):
    """Colour narrows a shape to its class's family (and its overlapping neighbours),
    never to an arbitrary class: measured on the decoded JPEG pixels of each instance."""
    import colorsys

    from pycocotools.coco import COCO
    from scipy.ndimage import binary_erosion
    coco = COCO(str(shapes / 'coco' / 'annotations' / 'instances_train.json'))
    checked = 0
    for ann in coco.loadAnns(coco.getAnnIds()):
        info = coco.loadImgs(ann['image_id'])[0]
        img = np.asarray(Image.open(shapes / 'coco' / 'train' / info['file_name']), np.float32)
        mask = coco.annToMask(ann).astype(bool)
        # the interior only: JPEG blurs the outline into the background
        inner = binary_erosion(mask, iterations=2)
        if inner.sum() < 20:
            continue
        r, g, b = np.median(img[inner], 0) / 255
        hue, sat, _ = colorsys.rgb_to_hsv(r, g, b)
        if sat < 0.3:  # too grey for a stable hue after JPEG
            continue
        centre = CLASS_HUE_CENTRES[ann['category_id'] - 1]
        distance = min(abs(hue - centre), 1 - abs(hue - centre))
        assert distance <= CLASS_HUE_HALF_WIDTH + 0.04, (ann['id'], hue, centre)
        checked += 1
    assert checked >= 8


def test_ade_label_maps(shapes):
    labels = sorted((shapes / 'ade' / 'annotations' / 'training').glob('*.png'))
    images = sorted((shapes / 'ade' / 'images' / 'training').glob('*.jpg'))
    assert len(labels) == len(images) == 8
    values = set()
    for path in labels:
        values |= set(np.unique(np.asarray(Image.open(path))).tolist())
    assert 1 in values and values <= {1, 2, 3, 4, 5}  # 0 (unlabelled) unused


def test_class_folders(shapes):
    for split, per_class in (('train', 2), ('val', 1)):
        for name in CLASSES:
            assert len(list((shapes / 'cls' / split / name).glob('*.JPEG'))) == per_class


def _dataset(config, loader, root):
    from mmengine.config import Config
    from mmengine.registry import DATASETS, init_default_scope
    cfg = Config.fromfile(osp.join(REPO, 'configs', 'demo', config))
    init_default_scope(cfg.default_scope)
    ds = cfg[loader].dataset
    ds.data_root = str(root) + '/'
    if 'ann_file' in ds:
        ds.ann_file = 'annotations/instances_val.json'
    return DATASETS.build(ds)


def test_demo_configs_read_the_data(shapes):
    det = _dataset('maskrcnn_ravlt_t_shapes.py', 'val_dataloader', shapes / 'coco')
    assert len(det) == 4 and det.metainfo['classes'] == CLASSES
    sample = det[0]['data_samples']
    assert sample.gt_instances.masks is not None
    seg = _dataset('fpn_ravlt_t_shapes.py', 'train_dataloader', shapes / 'ade')
    assert len(seg) == 8
    seg_map = _dataset('fpn_ravlt_t_shapes.py', 'val_dataloader', shapes / 'ade')[0][
        'data_samples'].gt_sem_seg.data
    assert set(seg_map.unique().tolist()) <= {0, 1, 2, 3, 4}  # background 0, shapes 1..4
    cls = _dataset('ravlt_t_shapes_cls.py', 'val_dataloader', shapes / 'cls')
    assert len(cls) == 4 and sorted(cls.metainfo['classes']) == sorted(CLASSES)
