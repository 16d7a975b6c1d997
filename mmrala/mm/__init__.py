"""OpenMMLab glue: registers RAVLT in mmengine's root registry and makes mmengine's own
checkpoints loadable with ``weights_only=True``.

Registering in the root ``MODELS`` (not mmdet's, mmseg's or mmpretrain's child
registries) makes ``type='RAVLT'`` resolve under every ``default_scope``.
"""
from .backbone import RAVLT, RAVLTClsNeck
from .hooks import FiniteLossHook
from .safe_load import MMENGINE_CHECKPOINT_GLOBALS, allow_mmengine_checkpoint_globals

allow_mmengine_checkpoint_globals()

__all__ = ['RAVLT', 'RAVLTClsNeck', 'FiniteLossHook', 'MMENGINE_CHECKPOINT_GLOBALS',
           'allow_mmengine_checkpoint_globals']
