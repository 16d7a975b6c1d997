"""OpenMMLab glue: registers the backbone (``type='RAVLT'``, class :class:`RAVLTBackbone`)
and the classifier neck in mmengine's root registry, the run-time components
every mmrala config declares (runner, hooks), and weights-only loading of every
checkpoint mmengine reads.

Registering in the root registries (not mmdet's, mmseg's or mmpretrain's children)
makes ``type='RAVLT'`` resolve under every ``default_scope``.
"""
from .backbone import RAVLTBackbone, RAVLTClsNeck
from .hooks import FiniteLossHook
from .runtime import (
    CrashSafeCheckpointHook,
    MainProcessLoggerHook,
    MMRalaRunner,
    RNGStateHook,
    load_model_weights,
)
from .safe_load import (
    MMENGINE_CHECKPOINT_GLOBALS,
    allow_mmengine_checkpoint_globals,
    force_weights_only_loading,
)

force_weights_only_loading()

__all__ = ['RAVLTBackbone', 'RAVLTClsNeck', 'FiniteLossHook', 'CrashSafeCheckpointHook',
           'MainProcessLoggerHook', 'MMRalaRunner', 'RNGStateHook', 'load_model_weights',
           'MMENGINE_CHECKPOINT_GLOBALS', 'allow_mmengine_checkpoint_globals',
           'force_weights_only_loading']
