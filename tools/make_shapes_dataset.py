"""Build the embedded "shapes" dataset of the demos: real images of four shape classes
(circle, triangle, square, star) in random colours, on textured backgrounds, partly
occluding each other, in three real on-disk formats:

- COCO (``coco/``): ``annotations/instances_{train,val}.json`` with polygon
  segmentations of the *visible* part of each instance, boxes, areas, and
  ``train/`` / ``val/`` JPEGs. Category ids 1..4.
- ADE20K layout (``ade/``): ``images/{training,validation}/*.jpg`` and
  ``annotations/{training,validation}/*.png`` label maps with ADE20K's convention:
  0 = unlabelled (ignored), 1 = background, 2..5 = the shapes; with
  ``reduce_zero_label=True`` (as in mmseg's ADE20KDataset) the classes become
  0 background, 1 circle, 2 triangle, 3 square, 4 star.
- ImageNet-style class folders (``cls/``): ``{train,val}/<class>/*.JPEG``, one main
  shape per image plus smaller distractors of other classes.

Everything comes from one seed (numpy's default_rng), so the same arguments give the
same files byte for byte (JPEG encoding by the same Pillow included).

    python tools/make_shapes_dataset.py                 # data/shapes, default sizes
    python tools/make_shapes_dataset.py --out DIR --num-train 40 --num-val 10 --force

The demo configs (configs/demo/) read data/shapes/ under the directory you run the
tools from; tools/train.py does not generate it, run this first (it skips the work when
data/shapes/DONE records the same arguments).
"""
from __future__ import annotations

import argparse
import json
import shutil
import sys
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw, ImageFilter

CLASSES = ('circle', 'triangle', 'square', 'star')
# ADE20K-layout label values: 0 unlabelled, 1 background, 2.. the shapes.
SEG_CLASSES = ('background', ) + CLASSES
MIN_VISIBLE = 0.35  # an instance less visible than this (occluded) is not drawn


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
        t = np.sin(xx / period * 1.3 + rng.uniform(0, 6)) * np.cos(yy / period + rng.uniform(0, 6))
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


# Each class has its own family of hues, 120 degrees wide, centred 90 degrees apart, so
# neighbouring families overlap: colour narrows a shape down to one or two classes and
# its outline tells the rest. A model from random weights picks the colour cue up within
# minutes on a CPU, which is what lets the demos reach a real metric that fast.
CLASS_HUE_CENTRES = (0.0, 0.25, 0.5, 0.75)  # turns: red, yellow-green, cyan, purple
CLASS_HUE_HALF_WIDTH = 1 / 6


def class_colour(rng, cls, img, poly, min_distance=120):
    """A fill colour from class cls's hue family that stands out from the background
    under the shape (a shape the eye cannot see is no label): the first of a few draws
    whose L1 distance to the mean colour under the shape's box is at least
    min_distance, else the farthest draw."""
    import colorsys
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


def mask_to_polygons(mask):
    """Polygons (COCO flat lists) of the outer contours of a bool mask."""
    import cv2
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL,
                                   cv2.CHAIN_APPROX_SIMPLE)
    polys = []
    for c in contours:
        if len(c) >= 3 and cv2.contourArea(c) >= 4:
            polys.append([float(v) for v in c.reshape(-1)])
    return polys


def make_scene(rng, height, width):
    """A detection / segmentation scene: 2-5 shapes, the visible ones kept."""
    n = int(rng.integers(2, 6))
    img, shapes = compose(rng, height, width, random_specs(rng, height, width, n, (0.1, 0.22)))
    kept = [s for s in shapes if s['visible'].sum() >= MIN_VISIBLE * max(s['full_area'], 1)]
    return img, kept


class Progress:
    def __init__(self, total, what):
        self.total, self.what, self.done = total, what, 0

    def step(self):
        self.done += 1
        if self.done == self.total or self.done % max(1, self.total // 20) == 0:
            print(f'\r  {self.what}: {self.done}/{self.total}', end='', flush=True)
            if self.done == self.total:
                print(flush=True)


def make_coco(root, num_train, num_val, size, rng):
    from pycocotools import mask as mask_utils
    root = Path(root)
    height, width = size
    categories = [dict(id=i + 1, name=n, supercategory='shape') for i, n in enumerate(CLASSES)]
    ann_id = 1
    for split, count, first in (('train', num_train, 1), ('val', num_val, 100000)):
        (root / split).mkdir(parents=True, exist_ok=True)
        images, annotations = [], []
        bar = Progress(count, f'COCO {split}')
        for i in range(count):
            image_id = first + i
            file_name = f'{image_id:06d}.jpg'
            img, shapes = make_scene(rng, height, width)
            for s in shapes:
                polys = mask_to_polygons(s['visible'])
                if not polys:
                    continue
                rle = mask_utils.merge(mask_utils.frPyObjects(polys, height, width))
                x, y, w, h = (float(v) for v in mask_utils.toBbox(rle))
                annotations.append(dict(
                    id=ann_id, image_id=image_id, category_id=s['cls'] + 1,
                    segmentation=polys, area=float(mask_utils.area(rle)),
                    bbox=[x, y, w, h], iscrowd=0))
                ann_id += 1
            img.save(root / split / file_name, quality=92)
            images.append(dict(id=image_id, file_name=file_name, height=height, width=width))
            bar.step()
        (root / 'annotations').mkdir(parents=True, exist_ok=True)
        with open(root / 'annotations' / f'instances_{split}.json', 'w') as f:
            json.dump(dict(images=images, annotations=annotations, categories=categories,
                           info=dict(description='mmrala shapes'), licenses=[]), f)


def make_ade(root, num_train, num_val, size, rng):
    root = Path(root)
    height, width = size
    for split, prefix, count in (('training', 'shapes_train', num_train),
                                 ('validation', 'shapes_val', num_val)):
        (root / 'images' / split).mkdir(parents=True, exist_ok=True)
        (root / 'annotations' / split).mkdir(parents=True, exist_ok=True)
        bar = Progress(count, f'ADE20K layout {split}')
        for i in range(count):
            name = f'{prefix}_{i + 1:06d}'
            img, shapes = make_scene(rng, height, width)
            label = np.ones((height, width), np.uint8)  # 1: background
            for s in shapes:
                label[s['visible']] = s['cls'] + 2
            img.save(root / 'images' / split / f'{name}.jpg', quality=92)
            Image.fromarray(label).save(root / 'annotations' / split / f'{name}.png')
            bar.step()


def make_cls(root, per_class_train, per_class_val, size, rng):
    root = Path(root)
    height, width = size
    for split, per_class in (('train', per_class_train), ('val', per_class_val)):
        bar = Progress(per_class * len(CLASSES), f'class folders {split}')
        for name in CLASSES:
            (root / split / name).mkdir(parents=True, exist_ok=True)
        order = [(c, i) for i in range(per_class) for c in range(len(CLASSES))]
        for c, i in order:
            # one or two small distractors of any class, then the main shape on top
            specs = random_specs(rng, height, width, int(rng.integers(1, 3)), (0.08, 0.14))
            r = rng.uniform(0.25, 0.38) * min(height, width)
            specs.append((c, rng.uniform(r * 0.8, width - r * 0.8),
                          rng.uniform(r * 0.8, height - r * 0.8), r))
            img, _ = compose(rng, height, width, specs)
            img.save(root / split / CLASSES[c] / f'{CLASSES[c]}_{i:05d}.JPEG', quality=92)
            bar.step()


def make_shapes_dataset(out='data/shapes', num_train=2000, num_val=100, size=(160, 160),
                        cls_size=(64, 64), seed=0, force=False):
    """Generate the three formats under out (skipped when out/DONE records the same
    arguments). size = (height, width) of the detection / segmentation images. The
    classification split uses num_train // 4 and num_val // 4 images per class."""
    out = Path(out)
    record = dict(num_train=num_train, num_val=num_val, size=list(size),
                  cls_size=list(cls_size), seed=seed, version=2)
    done = out / 'DONE'
    if not force and done.is_file() and json.loads(done.read_text()) == record:
        print(f'shapes dataset already in {out} ({record})')
        return out
    if out.exists():
        shutil.rmtree(out)
    print(f'generating the shapes dataset in {out} ({record})', flush=True)
    # one stream per format, so that each format does not depend on the others' sizes
    seeds = np.random.SeedSequence(seed).spawn(3)
    make_coco(out / 'coco', num_train, num_val, size, np.random.default_rng(seeds[0]))
    make_ade(out / 'ade', num_train, num_val, size, np.random.default_rng(seeds[1]))
    make_cls(out / 'cls', max(1, num_train // 4), max(1, num_val // 4), cls_size,
             np.random.default_rng(seeds[2]))
    done.write_text(json.dumps(record))
    return out


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    p.add_argument('--out', default='data/shapes')
    p.add_argument('--num-train', type=int, default=2000)
    p.add_argument('--num-val', type=int, default=100)
    p.add_argument('--size', type=int, nargs=2, default=(160, 160), metavar=('H', 'W'))
    p.add_argument('--cls-size', type=int, nargs=2, default=(64, 64), metavar=('H', 'W'))
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--force', action='store_true', help='regenerate even if present')
    a = p.parse_args(argv)
    make_shapes_dataset(a.out, a.num_train, a.num_val, tuple(a.size), tuple(a.cls_size),
                        a.seed, a.force)


if __name__ == '__main__':
    sys.exit(main())
