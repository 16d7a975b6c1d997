"""RAVLT and its ImageNet neck as OpenMMLab modules (``init_cfg``, ``norm_cfg``)."""
from __future__ import annotations

import copy
import warnings

from mmengine.logging import print_log
from mmengine.model import BaseModule
from mmengine.registry import MODELS

from ..checkpoint import (
    backbone_state_dict,
    check_backbone_state_dict,
    extract_state_dict,
    load_checkpoint_file,
)
from ..models import ravlt as network


def norm_layer_from_cfg(norm_cfg):
    """A ``num_features -> module`` factory from an mmcv ``norm_cfg`` (BN, SyncBN, ...)."""
    from mmcv.cnn import build_norm_layer  # mmcv is needed to build, not to import mmrala

    norm_cfg = dict(norm_cfg)

    def build(num_features):
        return build_norm_layer(norm_cfg, num_features)[1]

    return build


def init_cfg_from_pretrained(pretrained, init_cfg):
    """mmseg's ``EncoderDecoder`` hands ``model.pretrained`` to the backbone; take a local
    file the way mmseg's own backbones do, and refuse what cannot be RAVLT weights."""
    if pretrained is None:
        return init_cfg
    if not isinstance(pretrained, str) or '://' in pretrained:
        raise ValueError(
            f'RAVLT got pretrained={pretrained!r}, which is not a RAVLT checkpoint (a config '
            'inherited from another backbone passes its weights down). Set '
            'model.pretrained=None in the config, and give RAVLT weights with '
            "model.backbone.init_cfg=dict(type='Pretrained', checkpoint=PATH).")
    if init_cfg is not None:
        raise ValueError('RAVLT got both pretrained and init_cfg; keep only '
                         "init_cfg=dict(type='Pretrained', checkpoint=PATH).")
    warnings.warn("RAVLT: 'pretrained' is deprecated, use "
                  "init_cfg=dict(type='Pretrained', checkpoint=PATH) instead.",
                  FutureWarning, stacklevel=3)  # shown to users by default
    return dict(type='Pretrained', checkpoint=pretrained)


@MODELS.register_module(name='RAVLT')
class RAVLTBackbone(network.RAVLT, BaseModule):
    """RAVLT backbone for mmdet, mmseg and mmpretrain, registered as ``type='RAVLT'``.

    Takes every argument of :class:`mmrala.models.RAVLT` plus:

    Args:
        norm_cfg: the BatchNorm layers of the stem, the downsamplers (and the classifier
            neck), e.g. ``dict(type='SyncBN', requires_grad=True)`` for multi-GPU runs.
        init_cfg: ``dict(type='Pretrained', checkpoint=PATH)`` loads an authors' file
            (ImageNet, detection or segmentation) or an mmrala checkpoint, converting the
            names on the fly. Every backbone weight must be present and fit; only the
            dense-prediction output norms may be new (an ImageNet file has none).
        pretrained: a local checkpoint path, as mmseg's ``model.pretrained`` passes it;
            deprecated, becomes ``init_cfg=dict(type='Pretrained', checkpoint=PATH)``.
    """

    def __init__(self, arch='t', norm_cfg=dict(type='BN', requires_grad=True), init_cfg=None,
                 pretrained=None, **kwargs):
        # network.RAVLT.__init__ reaches BaseModule.__init__ through super(); init_cfg is
        # set afterwards so that it is not reset there.
        super().__init__(arch=arch, norm_layer=norm_layer_from_cfg(norm_cfg), **kwargs)
        self.init_cfg = copy.deepcopy(init_cfg_from_pretrained(pretrained, init_cfg))

    def init_weights(self):
        if not (isinstance(self.init_cfg, dict) and self.init_cfg.get('type') == 'Pretrained'):
            super().init_weights()
            return
        checkpoint = self.init_cfg.get('checkpoint')
        if not checkpoint:
            raise ValueError("RAVLT init_cfg type='Pretrained' needs checkpoint=PATH.")
        print_log(f'RAVLT: loading pretrained weights from {checkpoint}', logger='current')
        state = backbone_state_dict(extract_state_dict(load_checkpoint_file(checkpoint)))
        state, fresh = check_backbone_state_dict(self.state_dict(), state, source=checkpoint)
        self.load_state_dict(state, strict=False)
        if fresh:
            print_log(f'RAVLT: {len(fresh)} output-norm weights are new and keep their '
                      f'initial values: {", ".join(fresh)}', logger='current')
        self._is_init = True


@MODELS.register_module()
class RAVLTClsNeck(network.ClassifierHead, BaseModule):
    """The authors' ImageNet head up to the pooled features: 1x1 conv, BN, Swish, pool.

    Pair it with mmpretrain's ``LinearClsHead(in_channels=mid_channels)``: together they
    are the authors' head, parameter for parameter.
    """

    def __init__(self, in_channels=512, mid_channels=1024, norm_cfg=dict(type='BN'),
                 init_cfg=None):
        super().__init__(in_channels, mid_channels, num_classes=0,
                         norm_layer=norm_layer_from_cfg(norm_cfg))
        self.init_cfg = copy.deepcopy(init_cfg)
        self.apply(network.RAVLT._init_weights)

    def forward(self, inputs):
        features = inputs[-1] if isinstance(inputs, (tuple, list)) else inputs
        return (network.ClassifierHead.forward(self, features, pre_logits=True),)
