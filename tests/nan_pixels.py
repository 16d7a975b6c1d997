"""A data transform for the NaN test of tests/test_failure_modes.py: it turns the image
into float32 and writes NaN into a corner of the images whose file name contains a given
text, as a buggy custom transform or a float-image source with missing values would."""
import numpy as np
from mmcv.transforms import BaseTransform
from mmengine.registry import TRANSFORMS


@TRANSFORMS.register_module()
class PutNaNPixels(BaseTransform):

    def __init__(self, name_contains, value='nan'):
        self.name_contains = name_contains
        self.value = float(value)  # a string: configs dumped to .py cannot spell nan

    def transform(self, results):
        img = results['img'].astype(np.float32)
        if self.name_contains in results['img_path']:
            img[:4, :4] = self.value
        results['img'] = img
        return results
