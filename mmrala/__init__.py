"""mmrala: RAVLT (Rank-Augmented Vision Linear Transformer) for OpenMMLab and timm.

``import mmrala`` registers the timm models and, when mmengine is installed, the
OpenMMLab backbone ``RAVLT`` and neck ``RAVLTClsNeck`` in mmengine's root registry.
"""
import importlib.util

from . import models, ops  # noqa: F401  (registers ravlt_* with timm)

__version__ = '0.1.0'

if importlib.util.find_spec('mmengine') is not None:
    from . import mm  # noqa: F401
