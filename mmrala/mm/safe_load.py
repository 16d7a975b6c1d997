"""mmengine 0.10.7 checkpoints under torch >= 2.6, where ``torch.load`` defaults to
``weights_only=True``.

A Runner checkpoint pickles the message hub (``HistoryBuffer`` objects holding numpy
arrays) and numpy scalars, which the weights-only unpickler rejects, so ``load_from``,
``tools/test.py`` and ``--resume`` fail. Allow-listing exactly these classes keeps the
safe unpickler on, instead of turning it off.
"""
from __future__ import annotations

import numpy as np
import torch
from mmengine.logging import HistoryBuffer


def _numpy_reconstructors():
    # numpy >= 2 pickles through numpy._core, older numpy through numpy.core.
    try:
        from numpy._core import multiarray
    except ImportError:  # numpy < 2
        from numpy.core import multiarray
    return [multiarray._reconstruct, multiarray.scalar]


def _numpy_dtype_classes():
    # numpy >= 1.25 pickles a dtype as an instance of its numpy.dtypes.*DType class.
    dtype_classes = {type(np.dtype(name)) for name in
                     ('float16', 'float32', 'float64', 'int8', 'int16', 'int32', 'int64',
                      'uint8', 'bool')}
    return sorted(dtype_classes - {np.dtype}, key=lambda cls: cls.__name__)


MMENGINE_CHECKPOINT_GLOBALS = [HistoryBuffer, np.ndarray, np.dtype,
                               *_numpy_reconstructors(), *_numpy_dtype_classes()]


def allow_mmengine_checkpoint_globals():
    """Add the classes of mmengine's Runner checkpoints to torch's weights-only allow-list."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)
