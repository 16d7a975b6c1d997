"""The synthetic datasets (mmrala.synthetic_data): the quick start's shapes dataset is
deterministic, in the real formats and read by the quick-start configs' own datasets; the
tiny stand-ins of COCO, ADE20K and ImageNet are read by the released configs' datasets
with the real class ids."""
from __future__ import annotations

import hashlib
import os.path as osp

import numpy as np
import pytest
from conftest import CONFIGS
from PIL import Image

from mmrala.synthetic_data import (
    CLASS_HUE_CENTRES,
    CLASS_HUE_HALF_WIDTH,
    CLASSES,
    COCO_CATEGORY_IDS,
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


def test_never_deletes_a_folder_it_did_not_write(tmp_path):
    user_data = tmp_path / 'coco'
    (user_data / 'train2017').mkdir(parents=True)
    (user_data / 'train2017' / '000001.jpg').write_bytes(b'a user image')
    with pytest.raises(FileExistsError, match='not written by this generator'):
        make_shapes_dataset(user_data, num_train=8, num_val=4, size=(96, 96),
                            cls_size=(64, 64), seed=3, force=True)
    assert (user_data / 'train2017' / '000001.jpg').read_bytes() == b'a user image'


def test_regenerates_its_own_folder(shapes, tmp_path):
    own = make_shapes_dataset(tmp_path / 'own', num_train=8, num_val=4, size=(96, 96),
                              cls_size=(64, 64), seed=3)
    (own / 'DONE').unlink()   # as after an interrupted run
    again = make_shapes_dataset(own, num_train=8, num_val=4, size=(96, 96),
                                cls_size=(64, 64), seed=3)
    assert _digest(again) == _digest(shapes)


def test_command_line_writes_the_same_files_and_refuses_with_a_message(shapes, tmp_path):
    from mmrala.synthetic_data import main
    main(['--out', str(tmp_path / 'cli'), '--num-train', '8', '--num-val', '4',
          '--size', '96', '96', '--cls-size', '64', '64', '--seed', '3'])
    assert _digest(tmp_path / 'cli') == _digest(shapes)
    (tmp_path / 'user').mkdir()
    (tmp_path / 'user' / 'notes.txt').write_text('mine')
    with pytest.raises(SystemExit, match='not written by this generator'):
        main(['--out', str(tmp_path / 'user'), '--force'])
    assert (tmp_path / 'user' / 'notes.txt').read_text() == 'mine'


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
    cfg = Config.fromfile(osp.join(CONFIGS, config))
    init_default_scope(cfg.default_scope)
    ds = cfg[loader].dataset
    ds.data_root = osp.join(str(root), '')
    return DATASETS.build(ds)


def test_quickstart_configs_read_the_data(shapes):
    det = _dataset('quickstart/maskrcnn_ravlt_t_shapes.py', 'val_dataloader', shapes / 'coco')
    assert len(det) == 4 and det.metainfo['classes'] == CLASSES
    sample = det[0]['data_samples']
    assert sample.gt_instances.masks is not None
    seg = _dataset('quickstart/fpn_ravlt_t_shapes.py', 'train_dataloader', shapes / 'ade')
    assert len(seg) == 8
    seg_map = _dataset('quickstart/fpn_ravlt_t_shapes.py', 'val_dataloader', shapes / 'ade')[0][
        'data_samples'].gt_sem_seg.data
    assert set(seg_map.unique().tolist()) <= {0, 1, 2, 3, 4}  # background 0, shapes 1..4
    cls = _dataset('quickstart/ravlt_t_shapes_cls.py', 'val_dataloader', shapes / 'cls')
    assert len(cls) == 4 and sorted(cls.metainfo['classes']) == sorted(CLASSES)


def test_tiny_coco_is_read_with_the_coco_class_ids(coco_root):
    det = _dataset('maskrcnn_ravlt_t_coco.py', 'val_dataloader', coco_root)
    det_train = _dataset('maskrcnn_ravlt_t_coco.py', 'train_dataloader', coco_root)
    assert len(det) == 2 and len(det_train) == 4
    assert det.cat_ids == list(COCO_CATEGORY_IDS)
    labels = set()
    for i in range(len(det_train)):
        instances = det_train.get_data_info(i)['instances']
        assert instances, 'every image holds at least one visible shape'
        labels |= {inst['bbox_label'] for inst in instances}
    # the shapes are annotated as COCO ids 1, 18, 44 and 90: labels 0, 16, 39 and 79
    assert labels == {0, 16, 39, 79}


def test_tiny_ade20k_labels_reach_the_last_class(ade_root):
    seg = _dataset('fpn_ravlt_t_ade20k.py', 'val_dataloader', ade_root)
    assert len(seg) == 2
    values = set()
    for i in range(len(seg)):
        values |= set(seg[i]['data_samples'].gt_sem_seg.data.unique().tolist())
    # reduce_zero_label: wall 1 -> 0, the shapes 4, 21, 76, 150 -> 3, 20, 75, 149
    assert {0, 149} <= values <= {0, 3, 20, 75, 149}


def test_tiny_imagenet_has_the_1000_classes_and_images_in_four(imagenet_root):
    cls = _dataset('ravlt_t_in1k.py', 'train_dataloader', imagenet_root)
    assert len(cls.metainfo['classes']) == 1000
    assert len(cls) == 8
    assert sorted({cls.get_data_info(i)['gt_label'] for i in range(len(cls))}) == [0, 1, 2, 3]
