"""Weights-only loading of every checkpoint that goes through mmengine.

mmengine calls ``torch.load`` without ``weights_only``, so its safety depends on the
environment: with ``TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1`` (a common workaround for
mmengine under torch >= 2.6) a checkpoint's pickle can run code. Importing mmrala
replaces mmengine's local-file loader with :func:`load_local_checkpoint`, which passes
``weights_only=True`` explicitly, and the variable cannot override that. ``load_from``,
``--resume``, ``tools/test.py``, inferencers and ``init_cfg`` of any module all load
through it.

mmengine 0.10.7 checkpoints need a few globals on top of torch's safe types.

A Runner checkpoint pickles the message hub: ``HistoryBuffer`` objects holding numpy
arrays and scalars, and, in each buffer, its statistics methods as
``getattr(HistoryBuffer, 'mean')``. The weights-only unpickler rejects all of these, so
``load_from``, ``tools/test.py`` and ``--resume`` fail. Allow-listing exactly these
globals keeps the safe unpickler on instead of turning it off; ``getattr`` is replaced
by a version that only answers for HistoryBuffer's registered statistics.
"""
from __future__ import annotations

import os.path as osp
import pickle

import numpy as np
import torch
from mmengine.logging import HistoryBuffer
from mmengine.runner.checkpoint import CheckpointLoader

from ..checkpoint import load_checkpoint_file

try:
    from numpy._core import multiarray as _np_multiarray  # numpy >= 2
except ImportError:  # numpy < 2
    from numpy.core import multiarray as _np_multiarray


# HistoryBuffer fills its class-level registry only when the first buffer is created.
BUILTIN_STATISTICS = ('min', 'max', 'current', 'mean')


def history_buffer_statistic(owner, name):
    """``getattr`` as found in mmengine checkpoints, limited to HistoryBuffer statistics."""
    allowed = set(BUILTIN_STATISTICS) | set(HistoryBuffer._statistics_methods)
    if owner is HistoryBuffer and name in allowed:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({owner!r}, {name!r}); a weights-only load allows it '
        'only for the statistics methods of mmengine HistoryBuffer.')


def _numeric_dtype_classes():
    # numpy >= 1.25 restores a dtype by BUILDing an instance of its numpy.dtypes.*DType.
    names = ('bool', 'uint8', 'int8', 'int16', 'int32', 'int64', 'float16', 'float32', 'float64')
    return sorted({type(np.dtype(name)) for name in names} - {np.dtype},
                  key=lambda cls: cls.__name__)


MMENGINE_CHECKPOINT_GLOBALS = [
    HistoryBuffer, np.ndarray, np.dtype, _np_multiarray._reconstruct, _np_multiarray.scalar,
    *_numeric_dtype_classes(), (history_buffer_statistic, 'builtins.getattr'),
]


def allow_mmengine_checkpoint_globals():
    """Add the globals of mmengine's Runner checkpoints to torch's weights-only allow-list."""
    torch.serialization.add_safe_globals(MMENGINE_CHECKPOINT_GLOBALS)


def load_local_checkpoint(filename, map_location=None):
    """mmengine's loader for local paths, with ``weights_only=True`` whatever the
    environment says, and errors that name the file and the cause."""
    return load_checkpoint_file(osp.expanduser(filename), map_location=map_location)


def force_weights_only_loading():
    """Make :func:`load_local_checkpoint` mmengine's loader for local paths."""
    allow_mmengine_checkpoint_globals()
    CheckpointLoader.register_scheme(prefixes='', loader=load_local_checkpoint, force=True)
