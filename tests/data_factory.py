"""Tiny datasets in the real on-disk formats, generated for the end-to-end tests.

- COCO: ``annotations/instances_{train,val}2017.json`` (all 80 categories with their
  COCO ids, polygon masks, boxes, areas) and ``train2017/`` / ``val2017/`` JPEGs.
- ADE20K: ``images/{training,validation}/*.jpg`` and ``annotations/{training,
  validation}/*.png`` label maps (0 = unlabelled, 1..150 the classes), the layout of
  ADEChallengeData2016.
- ImageNet: ``train/<wnid>/*.JPEG`` and ``val/<wnid>/*.JPEG`` with all 1000 class
  folders (most of them empty), the layout mmpretrain's ImageNet dataset reads.

Images hold simple coloured shapes on noise, so that the labels are at least learnable.
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

# The 80 COCO category ids in the order of the dataset's classes (COCO 2017).
COCO_CAT_IDS = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90
]
# The handful of categories the tiny images use (person, car, dog), with a colour each.
USED_CATEGORIES = {1: (220, 40, 40), 3: (40, 200, 40), 18: (40, 60, 220)}


def _noise_image(rng, height, width):
    return Image.fromarray(rng.integers(0, 80, (height, width, 3), dtype=np.uint8))


def _polygon(rng, x0, y0, w, h, n=10):
    """A convex polygon (an ellipse sampled at n points) inside the box."""
    cx, cy = x0 + w / 2, y0 + h / 2
    angles = np.sort(rng.uniform(0, 2 * np.pi, n))
    xs = np.clip(cx + (w / 2) * np.cos(angles), x0, x0 + w)
    ys = np.clip(cy + (h / 2) * np.sin(angles), y0, y0 + h)
    return [round(float(v), 2) for xy in zip(xs, ys) for v in xy]


def _polygon_area(poly):
    xs, ys = np.asarray(poly[0::2]), np.asarray(poly[1::2])
    return float(0.5 * abs(np.dot(xs, np.roll(ys, 1)) - np.dot(ys, np.roll(xs, 1))))


def make_coco(root, num_train=4, num_val=2, size=(128, 160), seed=0):
    """COCO 2017 layout under root; returns root. size = (height, width)."""
    from mmdet.datasets import CocoDataset

    root = Path(root)
    rng = np.random.default_rng(seed)
    names = CocoDataset.METAINFO['classes']
    categories = [dict(id=cid, name=name, supercategory='none')
                  for cid, name in zip(COCO_CAT_IDS, names)]
    height, width = size
    ann_id = 1
    for split, count, first_id in (('train2017', num_train, 1), ('val2017', num_val, 1000)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        for i in range(count):
            image_id = first_id + i
            file_name = f'{image_id:012d}.jpg'
            img = _noise_image(rng, height, width)
            draw = ImageDraw.Draw(img)
            for cat_id in rng.choice(list(USED_CATEGORIES), size=2, replace=False):
                w, h = (int(v) for v in rng.integers(36, 64, 2))
                x0 = int(rng.integers(0, width - w))
                y0 = int(rng.integers(0, height - h))
                poly = _polygon(rng, x0, y0, w, h)
                draw.polygon(poly, fill=USED_CATEGORIES[int(cat_id)])
                xs, ys = poly[0::2], poly[1::2]
                bbox = [min(xs), min(ys), max(xs) - min(xs), max(ys) - min(ys)]
                annotations.append(dict(
                    id=ann_id, image_id=image_id, category_id=int(cat_id),
                    segmentation=[poly], area=_polygon_area(poly),
                    bbox=[round(v, 2) for v in bbox], iscrowd=0))
                ann_id += 1
            img.save(root / split / file_name, quality=95)
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info=dict(description='mmrala tiny COCO'), licenses=[]), f)
    return root


def make_ade20k(root, num_train=4, num_val=2, size=(96, 128), seed=0):
    """ADEChallengeData2016 layout under root; returns root. size = (height, width)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    height, width = size
    for split, prefix, count in (('training', 'ADE_train', num_train),
                                 ('validation', 'ADE_val', num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            name = f'{prefix}_{i + 1:08d}'
            img = np.asarray(_noise_image(rng, height, width)).copy()
            label = np.zeros((height, width), np.uint8)  # 0: unlabelled (ignored)
            label[: height // 2] = 1  # wall
            label[height // 2:] = 4  # floor
            for cls in rng.choice(np.arange(5, 151), size=2, replace=False):
                h, w = (int(v) for v in rng.integers(16, 40, 2))
                y0, x0 = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
                label[y0:y0 + h, x0:x0 + w] = cls
            colours = rng.integers(0, 256, (151, 3), dtype=np.uint8)
            img = np.where(label[..., None] > 0, colours[label] // 2 + img // 2, img)
            Image.fromarray(img.astype(np.uint8)).save(
                root / 'images' / split / f'{name}.jpg', quality=95)
            Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')
    return root


def make_imagenet(root, num_used_classes=4, per_class_train=2, per_class_val=1,
                  size=(80, 96), seed=0):
    """ImageNet folder tree under root: 1000 class folders per split, images in the
    first num_used_classes; returns root. size = (height, width)."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    wnids = [f'n{10000000 + 7 * i:08d}' for i in range(1000)]  # sorted like real wnids
    height, width = size
    colours = rng.integers(60, 256, (num_used_classes, 3))
    for split, per_class in (('train', per_class_train), ('val', per_class_val)):
        for c, wnid in enumerate(wnids):
            folder = root / split / wnid
            folder.mkdir(parents=True, exist_ok=True)
            if c >= num_used_classes:
                continue
            for i in range(per_class):
                img = np.asarray(_noise_image(rng, height, width)).copy()
                img[height // 4: 3 * height // 4, width // 4: 3 * width // 4] = colours[c]
                Image.fromarray(img).save(folder / f'{wnid}_{i}.JPEG', quality=95)
    return root
