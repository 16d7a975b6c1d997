"""Synthetic datasets in the real on-disk formats, for the quick start and the tests.

Every image is a scene of shapes of four classes (:data:`CLASSES`: circle, triangle,
square, star) in random colours on a textured background, partly occluding each other.
Three writers put such scenes into the layouts the task libraries read:

- :func:`write_coco`: ``annotations/instances_<split>.json`` (polygons of the *visible*
  part of each instance, boxes, areas) and one JPEG folder per split;
- :func:`write_ade20k`: ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` label maps (ADE20K: 0 unlabelled);
- :func:`write_class_folders`: ``{train,val}/<class>/*.JPEG``, one main shape per image
  plus smaller distractors of other classes (ImageNet's layout).

Two kinds of datasets are built from them:

- :func:`make_shapes_dataset`: the quick start's 4-class dataset in all three formats
  (``configs/quickstart/`` reads it), also from the command line::

      python tools/make_shapes_dataset.py --out data/shapes --num-train 2000

- :func:`make_tiny_coco`, :func:`make_tiny_ade20k`, :func:`make_tiny_imagenet`: a few
  images standing in for COCO 2017, ADEChallengeData2016 and ImageNet, with their class
  ids and file names, so that the released configs run on them unchanged but for the
  data root and the image size (the end-to-end tests).

Everything comes from one seed (numpy's ``default_rng``), so the same arguments give the
same files byte for byte (JPEG encoding by the same Pillow included). Only numpy and
Pillow are needed, plus pycocotools and OpenCV for the COCO annotations.
"""
from __future__ import annotations

import argparse
import colorsys
import json
import shutil
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ('circle', 'triangle', 'square', 'star')
# An instance less visible than this (occluded) gets no annotation.
MIN_VISIBLE = 0.35
JPEG_QUALITY = 92
# Written first into make_shapes_dataset's folder: marks a folder it may delete and
# regenerate.
OWNER_MARKER = '.mmrala_shapes'

# Each class has its own family of hues, 120 degrees wide, centred 90 degrees apart, so
# neighbouring families overlap: colour narrows a shape down to one or two classes and
# its outline tells the rest. A model from random weights picks the colour cue up within
# minutes on a CPU, which is what lets the quick start reach a real metric that fast.
CLASS_HUE_CENTRES = (0.0, 0.25, 0.5, 0.75)  # turns: red, yellow-green, cyan, purple
CLASS_HUE_HALF_WIDTH = 1 / 6

# The 80 category ids of COCO 2017, in the order of its class names (they skip 12, 26,
# 29, 30, 45, 66, 68, 69, 71 and 83).
COCO_CATEGORY_IDS = (
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25,
    27, 28, 31, 32, 33, 34, 35, 36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51,
    52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65, 67, 70, 72, 73, 74, 75, 76, 77,
    78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90)
# ADE20K's label values run 1..150 (0 unlabelled).
ADE20K_NUM_CLASSES = 150
ADE20K_SPLITS = (('training', 'train'), ('validation', 'val'))  # folder, short name


# ---------------------------------------------------------------------------------------
# Scenes
# ---------------------------------------------------------------------------------------

def textured_background(rng, height, width):
    """Random smooth gradient + stripes or checks + noise: clutter, not a flat colour."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    base = rng.uniform(40, 200, 3)
    grad = rng.uniform(-60, 60, (2, 3))
    img = base + (yy[..., None] / height) * grad[0] + (xx[..., None] / width) * grad[1]
    kind = rng.integers(3)
    period = rng.uniform(6, 20)
    angle = rng.uniform(0, np.pi)
    amp = rng.uniform(15, 45)
    if kind == 0:  # stripes
        t = np.sin((xx * np.cos(angle) + yy * np.sin(angle)) * 2 * np.pi / period)
    elif kind == 1:  # checks
        t = np.sign(np.sin(xx * 2 * np.pi / period) * np.sin(yy * 2 * np.pi / period))
    else:  # blobs
        t = (np.sin(xx / period * 1.3 + rng.uniform(0, 6))
             * np.cos(yy / period + rng.uniform(0, 6)))
    img = img + amp * t[..., None] * rng.uniform(-1, 1, 3)
    img = img + rng.normal(0, 12, img.shape)
    img = Image.fromarray(np.clip(img, 0, 255).astype(np.uint8))
    return img.filter(ImageFilter.GaussianBlur(rng.uniform(0, 1.0)))


def shape_polygon(rng, cls, cx, cy, r):
    """Outline of a shape of class cls (index into CLASSES) centred at (cx, cy), radius r,
    upright up to a random tilt of +-17 degrees; a list of (x, y)."""
    rot = rng.uniform(-0.3, 0.3)
    if cls == 0:  # circle (an ellipse, slight aspect change)
        n, ry = 40, r * rng.uniform(0.85, 1.0)
        a = np.linspace(0, 2 * np.pi, n, endpoint=False)
        pts = np.stack([r * np.cos(a), ry * np.sin(a)], 1)
    elif cls == 1:  # triangle
        a = rot - np.pi / 2 + np.array([0, 2 * np.pi / 3, 4 * np.pi / 3]) + rng.uniform(-0.2, 0.2, 3)
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
        rot = 0.0
    elif cls == 2:  # square
        a = np.array([0.25, 0.75, 1.25, 1.75]) * np.pi
        pts = np.stack([r * np.cos(a), r * np.sin(a)], 1)
    else:  # five-pointed star
        a = np.arange(10) * np.pi / 5 - np.pi / 2
        radii = np.where(np.arange(10) % 2 == 0, r, r * rng.uniform(0.38, 0.5))
        pts = np.stack([radii * np.cos(a), radii * np.sin(a)], 1)
    c, s = np.cos(rot), np.sin(rot)
    pts = pts @ np.array([[c, s], [-s, c]])
    return [(float(cx + x), float(cy + y)) for x, y in pts]


def class_colour(rng, cls, img, poly, min_distance=120):
    """A fill colour from class cls's hue family that stands out from the background
    under the shape (a shape the eye cannot see is no label): the first of a few draws
    whose L1 distance to the mean colour under the shape's box is at least
    min_distance, else the farthest draw."""
    xs, ys = [p[0] for p in poly], [p[1] for p in poly]
    box = (max(0, int(min(xs))), max(0, int(min(ys))),
           max(1, int(max(xs)) + 1), max(1, int(max(ys)) + 1))
    under = np.asarray(img.crop(box), np.float32).reshape(-1, 3).mean(0)
    best, best_distance = None, -1.0
    for _ in range(16):
        hue = (CLASS_HUE_CENTRES[cls]
               + rng.uniform(-CLASS_HUE_HALF_WIDTH, CLASS_HUE_HALF_WIDTH)) % 1.0
        colour = 255 * np.array(colorsys.hsv_to_rgb(hue, rng.uniform(0.45, 1.0),
                                                    rng.uniform(0.35, 1.0)))
        distance = float(np.abs(colour - under).sum())
        if distance > best_distance:
            best, best_distance = colour, distance
        if distance >= min_distance:
            break
    return tuple(int(round(v)) for v in best)


def compose(rng, height, width, specs):
    """Draw the shapes in specs [(cls, cx, cy, r)] in order over a textured background;
    later shapes occlude earlier ones. Returns the image and, per shape, its class, full
    polygon and visible mask (bool HxW)."""
    img = textured_background(rng, height, width)
    owner = np.full((height, width), -1, np.int32)
    polys = []
    for k, (cls, cx, cy, r) in enumerate(specs):
        poly = shape_polygon(rng, cls, cx, cy, r)
        ImageDraw.Draw(img).polygon(poly, fill=class_colour(rng, cls, img, poly))
        m = Image.new('L', (width, height), 0)
        ImageDraw.Draw(m).polygon(poly, fill=1)
        owner[np.asarray(m, bool)] = k
        polys.append((cls, poly, int(np.asarray(m).sum())))
    shapes = []
    for k, (cls, poly, full) in enumerate(polys):
        shapes.append(dict(cls=cls, polygon=poly, visible=owner == k, full_area=full))
    return img, shapes


def random_specs(rng, height, width, n, r_range):
    specs = []
    for _ in range(n):
        r = rng.uniform(*r_range) * min(height, width)
        cx = rng.uniform(r * 0.7, width - r * 0.7)
        cy = rng.uniform(r * 0.7, height - r * 0.7)
        specs.append((int(rng.integers(len(CLASSES))), cx, cy, r))
    return specs


def make_scene(rng, height, width):
    """A detection / segmentation scene: 2-5 shapes, the visible ones kept."""
    n = int(rng.integers(2, 6))
    img, shapes = compose(rng, height, width, random_specs(rng, height, width, n, (0.1, 0.22)))
    kept = [s for s in shapes if s['visible'].sum() >= MIN_VISIBLE * max(s['full_area'], 1)]
    return img, kept


def make_object_image(rng, height, width, cls):
    """A classification image: one or two small distractors of any class, then a large
    shape of class cls on top."""
    specs = random_specs(rng, height, width, int(rng.integers(1, 3)), (0.08, 0.14))
    r = rng.uniform(0.25, 0.38) * min(height, width)
    specs.append((cls, rng.uniform(r * 0.8, width - r * 0.8),
                  rng.uniform(r * 0.8, height - r * 0.8), r))
    img, _ = compose(rng, height, width, specs)
    return img


class Progress:
    """``\\r  what: done/total`` about twenty times over a loop."""

    def __init__(self, total, what):
        self.total, self.what, self.done = total, what, 0

    def step(self):
        self.done += 1
        if self.done == self.total or self.done % max(1, self.total // 20) == 0:
            print(f'\r  {self.what}: {self.done}/{self.total}', end='', flush=True)
            if self.done == self.total:
                print(flush=True)


# ---------------------------------------------------------------------------------------
# Writers, one per on-disk format
# ---------------------------------------------------------------------------------------

def _coco_tools():
    try:
        import cv2
        from pycocotools import mask as mask_utils
    except ImportError as err:
        raise ImportError(f'writing COCO annotations needs pycocotools and OpenCV ({err}); '
                          'install them with `pip install pycocotools opencv-python`') from err
    return cv2, mask_utils


def mask_to_polygons(mask, cv2):
    """Polygons (COCO flat lists) of the outer contours of a bool mask."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3 and cv2.contourArea(c) >= 4:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def write_coco(root, rng, counts, size, *, splits=('train', 'val'), first_image_ids=(1, 100000),
               file_name='{image_id:06d}.jpg', category_ids=(1, 2, 3, 4), categories=None,
               description='mmrala shapes'):
    """COCO detection / instance segmentation under root: per split, the images in
    ``root/<split>/`` and ``root/annotations/instances_<split>.json``.

    counts: images per split; size: (height, width); first_image_ids: the image id of
    each split's first image (ids then count up; file_name is formatted with it);
    category_ids: the category id of each class of :data:`CLASSES`; categories: the
    json's category list, dicts with id, name and supercategory (default: the four
    shapes, with category_ids).
    """
    cv2, mask_utils = _coco_tools()
    root = Path(root)
    height, width = size
    if categories is None:
        categories = [dict(id=i, name=n, supercategory='shape')
                      for i, n in zip(category_ids, CLASSES)]
    ann_id = 1
    for split, count, first in zip(splits, counts, first_image_ids):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        bar = Progress(count, f'COCO {split}')
        for i in range(count):
            image_id = first + i
            name = file_name.format(image_id=image_id)
            img, shapes = make_scene(rng, height, width)
            for s in shapes:
                polys = mask_to_polygons(s['visible'], cv2)
                if not polys:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append(dict(
                    id=ann_id, image_id=image_id, category_id=category_ids[s['cls']],
                    segmentation=polys, area=float(mask_utils.area(rle)),
                    bbox=[x, y, w, h], iscrowd=0))
                ann_id += 1
            img.save(root / split / name, quality=JPEG_QUALITY)
            images.append(dict(id=image_id, file_name=name, height=height, width=width))
            bar.step()
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info=dict(description=description), licenses=[]), f)
    return root


def write_ade20k(root, rng, counts, size, *, stem='shapes_{split}_{index:06d}',
                 background_label=1, class_labels=(2, 3, 4, 5)):
    """ADE20K semantic segmentation under root: ``images/<folder>/<stem>.jpg`` and
    ``annotations/<folder>/<stem>.png`` for the folders training and validation.

    counts: images per folder; size: (height, width); stem is formatted with split
    (train or val) and index (from 1). Every pixel is labelled: background_label off
    the shapes, class_labels[c] on the visible part of a shape of class c (0 is ADE20K's
    unlabelled value, ignored by ``reduce_zero_label=True``).
    """
    root = Path(root)
    height, width = size
    for (folder, split), count in zip(ADE20K_SPLITS, counts):
        (root / 'images' / folder).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / folder).mkdir(parents=True, exist_ok=True)
        bar = Progress(count, f'ADE20K layout {folder}')
        for i in range(count):
            name = stem.format(split=split, index=i + 1)
            img, shapes = make_scene(rng, height, width)
            label = np.full((height, width), background_label, np.uint8)
            for s in shapes:
                label[s['visible']] = class_labels[s['cls']]
            img.save(root / 'images' / folder / f'{name}.jpg', quality=JPEG_QUALITY)
            Image.fromarray(label).save(root / 'annotations' / folder / f'{name}.png')
            bar.step()
    return root


def write_class_folders(root, rng, per_class, size, *, class_folders=CLASSES,
                        empty_folders=(), file_name='{folder}_{index:05d}.JPEG'):
    """Image classification under root: ``<split>/<folder>/<file_name>`` for the splits
    train and val.

    per_class: images per class in each split; size: (height, width); class_folders:
    the folder of each class of :data:`CLASSES`; empty_folders: more class folders,
    left empty (a dataset with more classes than the four shapes); file_name is
    formatted with folder and index (from 0).
    """
    root = Path(root)
    height, width = size
    for split, count in zip(('train', 'val'), per_class):
        bar = Progress(count * len(CLASSES), f'class folders {split}')
        for folder in (*class_folders, *empty_folders):
            (root / split / folder).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            for cls, folder in enumerate(class_folders):
                img = make_object_image(rng, height, width, cls)
                img.save(root / split / folder / file_name.format(folder=folder, index=i),
                         quality=JPEG_QUALITY)
                bar.step()
    return root


# ---------------------------------------------------------------------------------------
# The quick start's shapes dataset
# ---------------------------------------------------------------------------------------

def make_shapes_dataset(out='data/shapes', num_train=2000, num_val=100, size=(160, 160),
                        cls_size=(64, 64), seed=0, force=False):
    """The quick start's dataset under out: ``coco/`` (category ids 1..4, ``train/``,
    ``val/``), ``ade/`` (labels 1 background, 2..5 the shapes) and ``cls/`` (a folder
    per class). size = (height, width) of the detection / segmentation images; the
    class folders get num_train // 4 and num_val // 4 images per class, cls_size.

    Skipped when out/DONE records the same arguments (unless force). Regenerating
    deletes out first, and only if this function created it: a non-empty folder
    without the OWNER_MARKER file raises FileExistsError and is left untouched.
    """
    out = Path(out)
    record = dict(num_train=num_train, num_val=num_val, size=list(size),
                  cls_size=list(cls_size), seed=seed, version=2)
    done = out / 'DONE'
    if not force and done.is_file() and json.loads(done.read_text()) == record:
        print(f'shapes dataset already in {out} ({record})')
        return out
    owner = out / OWNER_MARKER
    if out.exists():
        if any(out.iterdir()) and not owner.is_file():
            # Only a folder this generator started is ever deleted: out may point at a
            # user's real dataset.
            raise FileExistsError(
                f'{out} is not empty and was not written by this generator (it has no '
                f'{OWNER_MARKER} file), so nothing was deleted. Pass an empty or new folder.')
        shutil.rmtree(out)
    print(f'generating the shapes dataset in {out} ({record})', flush=True)
    out.mkdir(parents=True)
    owner.write_text('written by mmrala make_shapes_dataset; safe to regenerate\n')
    # one stream per format, so that each format does not depend on the others' sizes
    coco_seed, ade_seed, cls_seed = np.random.SeedSequence(seed).spawn(3)
    write_coco(out / 'coco', np.random.default_rng(coco_seed), (num_train, num_val), size)
    write_ade20k(out / 'ade', np.random.default_rng(ade_seed), (num_train, num_val), size)
    write_class_folders(out / 'cls', np.random.default_rng(cls_seed),
                        (max(1, num_train // 4), max(1, num_val // 4)), cls_size)
    done.write_text(json.dumps(record))
    return out


# ---------------------------------------------------------------------------------------
# Tiny stand-ins for the real datasets
# ---------------------------------------------------------------------------------------

def make_tiny_coco(root, class_names, num_train=4, num_val=2, size=(128, 160), seed=0):
    """COCO 2017 in miniature under root: ``train2017/``, ``val2017/`` with COCO's file
    names, and ``annotations/instances_{train,val}2017.json`` listing all 80 categories
    with their COCO ids and names (class_names, in COCO's order, e.g. mmdet's
    ``CocoDataset.METAINFO['classes']``). The shapes are annotated as four of them,
    among them the first and the last id, so that the gaps in the ids are crossed."""
    if len(class_names) != len(COCO_CATEGORY_IDS):
        raise ValueError(f'COCO 2017 has {len(COCO_CATEGORY_IDS)} classes; got '
                         f'{len(class_names)} class names')
    categories = [dict(id=i, name=n, supercategory='none')
                  for i, n in zip(COCO_CATEGORY_IDS, class_names)]
    return write_coco(root, np.random.default_rng(seed), (num_train, num_val), size,
                      splits=('train2017', 'val2017'), first_image_ids=(1, 1000),
                      file_name='{image_id:012d}.jpg', category_ids=(1, 18, 44, 90),
                      categories=categories, description='mmrala tiny COCO')


def make_tiny_ade20k(root, num_train=4, num_val=2, size=(96, 128), seed=0):
    """ADEChallengeData2016 in miniature under root, with ADE20K's file names; the
    background is labelled wall (1) and the shapes as four classes up to the last
    (150)."""
    return write_ade20k(root, np.random.default_rng(seed), (num_train, num_val), size,
                        stem='ADE_{split}_{index:08d}', background_label=1,
                        class_labels=(4, 21, 76, ADE20K_NUM_CLASSES))


def make_tiny_imagenet(root, per_class_train=2, per_class_val=1, size=(80, 96), seed=0):
    """ImageNet's folder tree in miniature under root: 1000 class folders per split
    named like WordNet ids (``n10000000``, ``n10000007``, ...; sorted as the real ones),
    images of the four shapes in the first four (``<wnid>_<index>.JPEG``), the others
    empty."""
    wnids = [f'n{10000000 + 7 * i:08d}' for i in range(1000)]
    return write_class_folders(root, np.random.default_rng(seed),
                               (per_class_train, per_class_val), size,
                               class_folders=wnids[:len(CLASSES)],
                               empty_folders=wnids[len(CLASSES):],
                               file_name='{folder}_{index}.JPEG')


# ---------------------------------------------------------------------------------------
# Command line
# ---------------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(
        description='Generate the quick start\'s shapes dataset (COCO, ADE20K layout and '
        'class folders) under --out.')
    parser.add_argument('--out', default='data/shapes')
    parser.add_argument('--num-train', type=int, default=2000)
    parser.add_argument('--num-val', type=int, default=100)
    parser.add_argument('--size', type=int, nargs=2, default=(160, 160), metavar=('H', 'W'))
    parser.add_argument('--cls-size', type=int, nargs=2, default=(64, 64),
                        metavar=('H', 'W'))
    parser.add_argument('--seed', type=int, default=0)
    parser.add_argument('--force', action='store_true', help='regenerate even if present')
    args = parser.parse_args(argv)
    try:
        make_shapes_dataset(args.out, args.num_train, args.num_val, tuple(args.size),
                            tuple(args.cls_size), args.seed, args.force)
    except FileExistsError as err:
        raise SystemExit(str(err)) from None


if __name__ == '__main__':
    main()
