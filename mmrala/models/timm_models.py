"""The four released RAVLT variants in timm's registry: ``timm.create_model('ravlt_s')``.

The authors publish their ImageNet weights as files (``RAVLT_T.pth`` ... ``RAVLT_L.pth``),
not as timm hub entries. Each default cfg names its file: ``pretrained=True`` reads it from
the working directory, ``pretrained_cfg_overlay=dict(file=PATH)`` from anywhere else. The
cfgs set timm's ``custom_load``, so timm hands the path to
:meth:`~mmrala.models.RAVLTClassifier.load_pretrained`: mmrala's weights-only loader reads
it, :func:`~mmrala.models.ravlt.checkpoint_filter_fn` maps the names, and it loads strictly.
"""
from __future__ import annotations

from timm.data import IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model

from .ravlt import CLASSIFIER, FIRST_CONV, RAVLTClassifier, checkpoint_filter_fn

__all__ = ['default_cfgs', 'ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l']

# timm's names of the four released variants, as in the authors' files RAVLT_T.pth ...
VARIANTS = ('ravlt_t', 'ravlt_s', 'ravlt_b', 'ravlt_l')


def _cfg(file, **kwargs):
    return dict(
        file=file, custom_load=True, num_classes=1000, input_size=(3, 224, 224),
        pool_size=(7, 7), crop_pct=0.9, interpolation='bicubic', mean=IMAGENET_DEFAULT_MEAN,
        std=IMAGENET_DEFAULT_STD, first_conv=FIRST_CONV, classifier=CLASSIFIER,
        paper_name='Breaking the Low-Rank Dilemma of Linear Attention',
        paper_ids='arXiv:2411.07635', origin_url='https://github.com/qhfan/RALA', **kwargs)


default_cfgs = generate_default_cfgs({
    f'{variant}.in1k': _cfg(f'{variant.upper()}.pth') for variant in VARIANTS})


def _create_ravlt(variant, pretrained=False, **kwargs) -> RAVLTClassifier:
    overlay = kwargs.get('pretrained_cfg_overlay') or {}
    if overlay.get('file'):
        # timm >= 1.0.30 resets custom_load when an overlay names a file; keep it, so that
        # the file is still read by mmrala's weights-only loader and checked strictly.
        kwargs['pretrained_cfg_overlay'] = dict(overlay, custom_load=overlay.get('custom_load',
                                                                                 True))
    return build_model_with_cfg(
        RAVLTClassifier, variant, pretrained,
        pretrained_filter_fn=checkpoint_filter_fn,
        feature_cfg=dict(out_indices=(0, 1, 2, 3), flatten_sequential=True),
        arch=variant, **kwargs)


def _register(variant: str):
    """Registers timm's entry point for one variant under the variant's own name, as a
    ``def ravlt_t(pretrained=False, **kwargs)`` with ``@register_model`` would: timm takes
    the registry name from the function's name and its pretrained cfgs from
    ``default_cfgs``."""
    def entry_point(pretrained=False, **kwargs) -> RAVLTClassifier:
        return _create_ravlt(variant, pretrained, **kwargs)

    entry_point.__name__ = entry_point.__qualname__ = variant
    entry_point.__doc__ = (f'RAVLT-{variant[-1].upper()} classifier; '
                           f'``timm.create_model({variant!r}, pretrained=..., **kwargs)``.')
    return register_model(entry_point)


ravlt_t, ravlt_s, ravlt_b, ravlt_l = map(_register, VARIANTS)
