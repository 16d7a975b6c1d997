"""The RAVLT network: plain torch modules (torch and timm only)."""
from .ravlt import (
                    ARCH_SETTINGS,
                    ATTN_TYPES,
                    RAVLT,
                    ClassifierHead,
                    RAVLTBlock,
                    RAVLTClassifier,
                    resolve_arch,
)
from .timm_models import ravlt_b, ravlt_l, ravlt_s, ravlt_t

__all__ = ['ARCH_SETTINGS', 'ATTN_TYPES', 'RAVLT', 'ClassifierHead', 'RAVLTBlock',
           'RAVLTClassifier', 'resolve_arch', 'ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l']
