"""``timm.create_model('ravlt_s', num_classes=...)`` for the four released variants.

The weights are not on a model hub: download the authors' file and pass it with
``pretrained=True, pretrained_cfg_overlay=dict(file='RAVLT_S.pth')``; it is converted
on the fly and loaded strictly.
"""
from __future__ import annotations

from timm.models import register_model

from ..convert import (
    check_backbone_state_dict,
    convert_official_state_dict,
    extract_state_dict,
    is_official_layout,
    load_checkpoint_file,
)
from .ravlt import RAVLTClassifier

IMAGENET_CFG = dict(input_size=(3, 224, 224), pool_size=(7, 7), crop_pct=0.9,
                    interpolation='bicubic', mean=(0.485, 0.456, 0.406),
                    std=(0.229, 0.224, 0.225), first_conv='patch_embed.proj.0',
                    classifier='head.fc', num_classes=1000)


def _create_ravlt(variant, pretrained=False, pretrained_cfg=None, pretrained_cfg_overlay=None,
                  **kwargs):
    kwargs.pop('cache_dir', None)   # timm's hub cache; the weights come from a local file
    if kwargs.pop('features_only', False):
        raise ValueError(f'ravlt_{variant}: features_only is not supported through timm; build '
                         'mmrala.models.RAVLT(arch=...) for multi-scale features.')
    model = RAVLTClassifier(variant, **kwargs)
    model.pretrained_cfg = model.default_cfg = dict(IMAGENET_CFG, architecture=f'ravlt_{variant}')
    if pretrained:
        checkpoint = (pretrained_cfg_overlay or {}).get('file')
        if not checkpoint:
            raise ValueError(
                f"ravlt_{variant}: the authors' weights are not on a model hub. Download "
                f'RAVLT_{variant.upper()}.pth from their release and pass '
                f"pretrained_cfg_overlay=dict(file='RAVLT_{variant.upper()}.pth').")
        load_official_classifier(model, checkpoint)
    return model


def load_official_classifier(model: RAVLTClassifier, checkpoint_path):
    """Load an authors' (or converted) ImageNet file into ``model`` strictly.

    A classifier whose class count differs from the file keeps its own ``head.fc``.
    """
    state = extract_state_dict(load_checkpoint_file(checkpoint_path))
    if is_official_layout(state):
        state = convert_official_state_dict(state)
    model_state = model.state_dict()
    fc_fits = all(k in model_state and model_state[k].shape == v.shape
                  for k, v in state.items() if k.startswith('head.fc.'))
    if not fc_fits:
        state = {k: v for k, v in state.items() if not k.startswith('head.fc.')}
        model_state = {k: v for k, v in model_state.items() if not k.startswith('head.fc.')}
    state, _ = check_backbone_state_dict(model_state, state, source=str(checkpoint_path))
    model.load_state_dict(state, strict=False)
    return model


@register_model
def ravlt_t(pretrained=False, **kwargs) -> RAVLTClassifier:
    return _create_ravlt('t', pretrained, **kwargs)


@register_model
def ravlt_s(pretrained=False, **kwargs) -> RAVLTClassifier:
    return _create_ravlt('s', pretrained, **kwargs)


@register_model
def ravlt_b(pretrained=False, **kwargs) -> RAVLTClassifier:
    return _create_ravlt('b', pretrained, **kwargs)


@register_model
def ravlt_l(pretrained=False, **kwargs) -> RAVLTClassifier:
    return _create_ravlt('l', pretrained, **kwargs)
