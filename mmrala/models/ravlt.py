"""RAVLT: Rank-Augmented Vision Linear Transformer (Fan, Huang, He, CVPR 2025).

Plain ``torch.nn`` modules: this file imports only torch, timm, ``mmrala.ops`` and
``mmrala.checkpoint``, so the network runs on a machine without OpenMMLab. Everything is
channels-first (B, C, H, W) like the authors' code; every "linear" is a 1x1 conv.

Two models share the trunk:

* :class:`RAVLT` -- the dense-prediction backbone. It returns the outputs of the
  stages in ``out_indices`` (strides 4, 8, 16, 32), each through its own LayerNorm.
* :class:`RAVLTClassifier` -- the ImageNet model with the authors' head
  (1x1 conv to 1024, BN, Swish, global pool, 1x1 conv to the classes).

Module names are mmrala's own; ``mmrala.checkpoint`` maps the authors' checkpoint names
onto them.
"""
from __future__ import annotations

import contextlib
import os
from collections.abc import Callable, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d, SelectAdaptivePool2d, trunc_normal_
from timm.models import adapt_input_conv
from timm.models._features import feature_take_indices

from ..checkpoint import (
    check_backbone_state_dict,
    convert_official_state_dict,
    extract_state_dict,
    is_official_layout,
    load_checkpoint_file,
)
from ..ops import RALA_IMPLS, apply_rope, rala_gated_attention, rope_pair_phases

__all__ = ['ATTN_TYPES', 'ARCH_SETTINGS', 'RAVLT', 'RAVLTClassifier', 'RAVLTBlock',
           'ClassifierHead', 'checkpoint_filter_fn', 'resolve_arch']

# torch.fx leaves: these functions look at concrete shapes, devices and dtypes (to size the
# RoPE tables, pick a kernel), which a symbolic trace cannot follow. Wrapping their names in
# this module makes every tracer (torch.fx.symbolic_trace, torchvision's
# create_feature_extractor, timm's FX features) record each call as one node.
torch.fx.wrap('rala_gated_attention')
torch.fx.wrap('rope_pair_phases')
torch.fx.wrap('apply_rope')

ATTN_TYPES = ('rala', 'softmax')
DEFAULT_ATTN_TYPES = ('rala', 'rala', 'softmax', 'softmax')
LN_EPS = 1e-6

# The released variants (docs/architecture.md). ``drop_path_rate`` is the authors'
# ImageNet value, used when the caller does not give one.
ARCH_SETTINGS = {
    't': dict(embed_dims=(64, 128, 256, 512), depths=(2, 2, 6, 2), num_heads=(1, 2, 4, 8),
              mlp_ratios=(3.5,) * 4, layer_scale_init_values=(1.0,) * 4, drop_path_rate=0.1),
    's': dict(embed_dims=(64, 128, 320, 512), depths=(3, 5, 9, 3), num_heads=(1, 2, 5, 8),
              mlp_ratios=(3.5,) * 4, layer_scale_init_values=(1.0,) * 4, drop_path_rate=0.15),
    'b': dict(embed_dims=(96, 192, 384, 512), depths=(4, 6, 12, 6), num_heads=(1, 2, 6, 8),
              mlp_ratios=(3.5,) * 4, layer_scale_init_values=(1.0, 1.0, 1e-6, 1e-6),
              drop_path_rate=0.4),
    'l': dict(embed_dims=(96, 192, 448, 640), depths=(4, 7, 19, 8), num_heads=(1, 2, 7, 10),
              mlp_ratios=(3.5,) * 4, layer_scale_init_values=(1e-6,) * 4, drop_path_rate=0.55),
}
ARCH_KEYS = ('embed_dims', 'depths', 'num_heads', 'mlp_ratios', 'layer_scale_init_values')


def resolve_arch(arch) -> dict:
    """The full per-stage settings for ``arch``: a variant name or a dict of ARCH_KEYS."""
    if isinstance(arch, str):
        key = arch.lower()
        for prefix in ('ravlt_', 'ravlt-'):
            key = key[len(prefix):] if key.startswith(prefix) else key
        if key not in ARCH_SETTINGS:
            raise ValueError(f'unknown RAVLT arch {arch!r}; choose one of '
                             f'{sorted(ARCH_SETTINGS)} or pass a dict with keys {ARCH_KEYS}.')
        return dict(ARCH_SETTINGS[key])
    if not isinstance(arch, dict):
        raise TypeError(f'RAVLT arch must be a variant name or a dict, got {type(arch).__name__}.')
    missing = [key for key in ARCH_KEYS if key not in arch]
    if missing:
        raise ValueError(f'custom RAVLT arch is missing {missing}; it needs all of {ARCH_KEYS}.')
    settings = {key: tuple(arch[key]) for key in ARCH_KEYS}
    lengths = {key: len(value) for key, value in settings.items()}
    if len(set(lengths.values())) != 1:
        raise ValueError(f'custom RAVLT arch needs one entry per stage in every field, got {lengths}.')
    settings['drop_path_rate'] = arch.get('drop_path_rate', 0.1)
    return settings


def _conv_bn(in_channels, out_channels, stride, norm_layer):
    return [nn.Conv2d(in_channels, out_channels, 3, stride, 1), norm_layer(out_channels)]


class PatchEmbed(nn.Module):
    """Stride-4 convolutional stem: four 3x3 convs (s2, s1, s1, s2) with BN, GELU between."""

    def __init__(self, in_channels: int, embed_dim: int, norm_layer: Callable[[int], nn.Module]):
        super().__init__()
        mid = embed_dim // 2
        layers = []
        for conv_in, conv_out, stride in ((in_channels, mid, 2), (mid, mid, 1), (mid, mid, 1)):
            layers += [*_conv_bn(conv_in, conv_out, stride, norm_layer), nn.GELU()]
        layers += _conv_bn(mid, embed_dim, 2, norm_layer)
        # One Sequential, so that the authors' indices (convs 0/3/6/9, BNs 1/4/7/10) carry over.
        self.proj = nn.Sequential(*layers)

    def forward(self, x):
        return self.proj(x)


class PatchMerging(nn.Module):
    """Halves the resolution between stages: 3x3 conv stride 2, then BN."""

    def __init__(self, in_channels, out_channels, norm_layer):
        super().__init__()
        self.reduction = nn.Conv2d(in_channels, out_channels, 3, 2, 1)
        self.norm = norm_layer(out_channels)

    def forward(self, x):
        return self.norm(self.reduction(x))


class ConvFFN(nn.Module):
    """1x1 conv, GELU, residual depthwise 3x3, 1x1 conv."""

    def __init__(self, dim, hidden_dim):
        super().__init__()
        self.fc1 = nn.Conv2d(dim, hidden_dim, 1)
        self.act = nn.GELU()
        self.dwconv = nn.Conv2d(hidden_dim, hidden_dim, 3, 1, 1, groups=hidden_dim)
        self.fc2 = nn.Conv2d(hidden_dim, dim, 1)

    def forward(self, x):
        x = self.act(self.fc1(x))
        x = x + self.dwconv(x)
        return self.fc2(x)


class RAVLTAttention(nn.Module):
    """The attention of a RAVLT block: ``proj((core(q, k, v) + lepe(v)) * o)``.

    ``attn_type='rala'`` uses the rank-augmented linear attention (linear in tokens);
    ``'softmax'`` uses full softmax attention with 2-D RoPE on q and k, through
    ``scaled_dot_product_attention``.
    """

    def __init__(self, dim, num_heads, attn_type='rala', rala_impl='auto'):
        super().__init__()
        if attn_type not in ATTN_TYPES:
            raise ValueError(f'unknown attention type {attn_type!r}; choose one of {ATTN_TYPES}.')
        if rala_impl not in RALA_IMPLS:
            raise ValueError(f'unknown rala_impl {rala_impl!r}; choose one of {RALA_IMPLS}.')
        if dim % num_heads or (dim // num_heads) % 4:
            raise ValueError(f'{dim} channels over {num_heads} heads must give a head dim '
                             'divisible by 4 (2-D RoPE rotates channel pairs on two axes).')
        self.dim, self.num_heads, self.head_dim = dim, num_heads, dim // num_heads
        self.attn_type = attn_type
        self.rala_impl = rala_impl
        self.qkvo = nn.Conv2d(dim, 4 * dim, 1)
        self.lepe = nn.Conv2d(dim, dim, 5, 1, 2, groups=dim)
        self.proj = nn.Conv2d(dim, dim, 1)

    def _softmax_core(self, qkv):
        batch, _, height, width = qkv.shape
        q, k, v = qkv.reshape(batch, 3, self.num_heads, self.head_dim, height * width).unbind(1)
        table_dtype = torch.promote_types(qkv.dtype, torch.float32)
        cos, sin = rope_pair_phases(height, width, self.head_dim, qkv.device, table_dtype)
        q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)
        out = F.scaled_dot_product_attention(q.transpose(-1, -2), k.transpose(-1, -2),
                                             v.transpose(-1, -2))
        return out.transpose(-1, -2).reshape(batch, self.dim, height, width)

    def forward(self, x):
        qkvo = self.qkvo(x)
        if self.attn_type == 'rala':
            # One autograd node from qkvo to the gated output: one gradient buffer for qkvo.
            out = rala_gated_attention(qkvo, self.lepe.weight, self.lepe.bias, self.num_heads,
                                       self.rala_impl)
        else:
            qkv, gate = qkvo[:, :3 * self.dim], qkvo[:, 3 * self.dim:]
            out = (self._softmax_core(qkv) + self.lepe(qkv[:, 2 * self.dim:])) * gate
        return self.proj(out)

    def extra_repr(self):
        return f'type={self.attn_type}, heads={self.num_heads}, head_dim={self.head_dim}'


class RAVLTBlock(nn.Module):
    """CPE, then pre-norm attention and FFN, each with layer scale and stochastic depth."""

    def __init__(self, dim, num_heads, mlp_ratio=3.5, attn_type='rala', drop_path=0.0,
                 layer_scale_init_value=1.0, rala_impl='auto'):
        super().__init__()
        self.pos_embed = nn.Conv2d(dim, dim, 3, 1, 1, groups=dim)
        self.norm1 = LayerNorm2d(dim, eps=LN_EPS)
        self.attn = RAVLTAttention(dim, num_heads, attn_type, rala_impl)
        self.gamma1 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init_value)))
        self.norm2 = LayerNorm2d(dim, eps=LN_EPS)
        self.mlp = ConvFFN(dim, int(mlp_ratio * dim))
        self.gamma2 = nn.Parameter(torch.full((1, dim, 1, 1), float(layer_scale_init_value)))
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()

    def forward(self, x):
        x = x + self.pos_embed(x)
        x = x + self.drop_path(self.gamma1 * self.attn(self.norm1(x)))
        return x + self.drop_path(self.gamma2 * self.mlp(self.norm2(x)))


class RAVLTStage(nn.Module):
    """Optional PatchMerging (every stage but the first), then the blocks."""

    def __init__(self, in_dim, dim, depth, num_heads, mlp_ratio, attn_type, drop_paths,
                 layer_scale_init_value, norm_layer, rala_impl, with_cp=False):
        super().__init__()
        self.downsample = (PatchMerging(in_dim, dim, norm_layer) if in_dim is not None
                           else nn.Identity())
        self.blocks = nn.ModuleList(
            RAVLTBlock(dim, num_heads, mlp_ratio, attn_type, drop_paths[i],
                       layer_scale_init_value, rala_impl) for i in range(depth))
        self.with_cp = with_cp

    def forward(self, x):
        x = self.downsample(x)
        for block in self.blocks:
            if self.with_cp and x.requires_grad:
                x = torch.utils.checkpoint.checkpoint(block, x, use_reentrant=False)
            else:
                x = block(x)
        return x


def _checked_images(x: torch.Tensor, in_chans: int) -> torch.Tensor:
    """``x``, once it is known to be a batch of ``in_chans``-channel images.

    A torch.fx leaf (wrapped below, like the ops above): the check reads the concrete
    shape, so it runs inside traced graphs too instead of breaking the trace.
    """
    if x.dim() != 4 or x.shape[1] != in_chans:
        raise ValueError(f'RAVLT expects images of shape (B, {in_chans}, H, W), got '
                         f'{tuple(x.shape)}; fix the data pipeline, or build the model with '
                         'in_channels (timm: in_chans) matching the data (and train or convert '
                         'the stem).')
    return x


torch.fx.wrap('_checked_images')


def _device_context(device):
    """Creates the layers built inside it on ``device`` (timm's ``device=``, e.g. 'meta')."""
    return torch.device(device) if device is not None else contextlib.nullcontext()


def _factory_kwargs(module: nn.Module) -> dict:
    """The device and dtype of ``module``'s parameters, for layers that replace its own."""
    param = next(module.parameters(), None)
    return {} if param is None else dict(device=param.device, dtype=param.dtype)


class RAVLT(nn.Module):
    """RAVLT dense-prediction backbone (detection, segmentation).

    Besides OpenMMLab's interface it has timm's feature API: ``feature_info`` (per stage:
    channels, stride 4 / 8 / 16 / 32 and module name), :meth:`forward_intermediates` and
    :meth:`prune_intermediate_layers`.

    Args:
        arch: ``'t'``, ``'s'``, ``'b'``, ``'l'`` or a dict with ``embed_dims``, ``depths``,
            ``num_heads``, ``mlp_ratios`` and ``layer_scale_init_values`` (one per stage).
        in_channels: channels of the input image (timm's ``in_chans``).
        attn_types: attention per stage, ``'rala'`` or ``'softmax'``. The released models
            use RALA in stages 1-2 and softmax attention in stages 3-4.
        out_indices: increasing stage indices whose outputs are returned (0 = stride 4,
            3 = stride 32; negative ones count from the end).
        out_norm: pass every returned output through its own LayerNorm, as the authors'
            detection and segmentation models do.
        drop_path_rate: stochastic-depth rate of the last block (linear from 0);
            ``None`` takes the variant's ImageNet value.
        frozen_stages: -1 freezes nothing; k >= 0 freezes the stem and the first k stages
            with their out norms (mmdet's Swin convention).
        norm_eval: keep every BatchNorm in eval mode while training (frozen statistics).
        with_cp: activation checkpointing per block (less memory, one more forward).
        norm_layer: factory for the BatchNorm layers (e.g. ``nn.SyncBatchNorm``).
        rala_impl: ``'auto'``, ``'torch'`` or ``'triton'`` for the RALA core.
        device, dtype: where and in what dtype to create the parameters (timm passes them);
            the layers are built on ``device`` directly, then cast to ``dtype``.
    """

    def __init__(self, arch='t', in_channels: int = 3,
                 attn_types: Sequence[str] = DEFAULT_ATTN_TYPES,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = True,
                 drop_path_rate: float | None = None, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 norm_layer: Callable[[int], nn.Module] | None = None,
                 rala_impl: str = 'auto', device=None, dtype=None):
        super().__init__()
        settings = resolve_arch(arch)
        self.arch_settings = settings
        num_stages = len(settings['depths'])
        self.embed_dims = list(settings['embed_dims'])
        self.num_heads = list(settings['num_heads'])
        self.in_chans = in_channels

        attn_types = tuple(attn_types)
        bad = [t for t in attn_types if t not in ATTN_TYPES]
        if bad or len(attn_types) != num_stages:
            raise ValueError(f'attn_types must give one of {ATTN_TYPES} for each of the '
                             f'{num_stages} stages, got {attn_types}.')
        self.attn_types = attn_types
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if (not out_indices or any(not 0 <= i < num_stages for i in out_indices)
                or list(out_indices) != sorted(set(out_indices))):
            raise ValueError(f'out_indices must be increasing stage indices in '
                             f'[0, {num_stages - 1}], got {out_indices}.')
        self.out_indices = out_indices
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}.')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        norm_layer = norm_layer or nn.BatchNorm2d
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']
        block_rates = torch.linspace(0, drop_path_rate, sum(settings['depths'])).tolist()

        with _device_context(device):
            self.patch_embed = PatchEmbed(in_channels, self.embed_dims[0], norm_layer)
            stages = []
            first_block = 0
            for i in range(num_stages):
                depth = settings['depths'][i]
                stages.append(RAVLTStage(
                    in_dim=self.embed_dims[i - 1] if i else None, dim=self.embed_dims[i],
                    depth=depth, num_heads=self.num_heads[i],
                    mlp_ratio=settings['mlp_ratios'][i], attn_type=attn_types[i],
                    drop_paths=block_rates[first_block:first_block + depth],
                    layer_scale_init_value=settings['layer_scale_init_values'][i],
                    norm_layer=norm_layer, rala_impl=rala_impl, with_cp=with_cp))
                first_block += depth
            # A Sequential, so that timm's FeatureListNet can run the stages one by one.
            self.stages = nn.Sequential(*stages)
            # Only the returned stages get a norm: an unused one would break DDP's gradient
            # check.
            self.out_norms = nn.ModuleDict(
                {str(i): LayerNorm2d(self.embed_dims[i], eps=LN_EPS) for i in out_indices}
                if out_norm else {})
        self.feature_info = [dict(num_chs=dim, reduction=2 ** (i + 2), module=f'stages.{i}')
                             for i, dim in enumerate(self.embed_dims)]
        self.num_features = self.embed_dims[-1]
        self.apply(self._init_weights)
        if dtype is not None:
            self.to(dtype=dtype)
        self._freeze_stages()

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def in_channels(self) -> int:
        """OpenMMLab's name for ``in_chans``."""
        return self.in_chans

    @property
    def with_cp(self) -> bool:
        return all(stage.with_cp for stage in self.stages)

    @with_cp.setter
    def with_cp(self, enabled: bool):
        for stage in self.stages:
            stage.with_cp = enabled

    def set_grad_checkpointing(self, enable: bool = True):
        """timm's name for ``with_cp``: activation checkpointing per block."""
        self.with_cp = enable

    def group_matcher(self, coarse: bool = False) -> dict:
        """Parameter groups for timm's layer-wise lr decay: the stem, then stage by stage
        (coarse) or block by block, each downsampler with its stage's first block."""
        return dict(
            stem=r'^patch_embed',
            blocks=r'^stages\.(\d+)' if coarse else [
                (r'^stages\.(\d+)\.downsample', (0,)),
                (r'^stages\.(\d+)\.blocks\.(\d+)', None),
                (r'^out_norms\.(\d+)', (99999,)),
            ])

    def _frozen_modules(self):
        if self.frozen_stages >= 0:
            yield self.patch_embed
        for i in range(min(self.frozen_stages, len(self.stages))):
            yield self.stages[i]
            if str(i) in self.out_norms:
                yield self.out_norms[str(i)]

    def _freeze_stages(self):
        for module in self._frozen_modules():
            module.eval()
            for param in module.parameters():
                param.requires_grad = False

    def train(self, mode: bool = True):
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for module in self.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def forward_intermediates(self, x, indices=None, norm: bool = False,
                              stop_early: bool = False, output_fmt: str = 'NCHW',
                              intermediates_only: bool = False):
        """timm's feature API: the outputs of the stages in ``indices``.

        Args:
            indices: ``None`` for every stage, an int n for the last n, or stage indices.
            norm: pass each output through its stage's out norm, where there is one (the
                dense backbone's ``out_norms``; the classifier has none).
            stop_early: run no stage after the last one asked for.
            output_fmt: only ``'NCHW'``: every RAVLT tensor is channels-first.
            intermediates_only: return only the list of outputs.

        Returns:
            ``(x, intermediates)``, ``x`` being the output of the last stage run (that of
            ``forward_features`` unless ``stop_early`` ends sooner), or ``intermediates``.
        """
        if output_fmt != 'NCHW':
            raise ValueError(f"RAVLT's features are channels-first; output_fmt must be 'NCHW', "
                             f'got {output_fmt!r}.')
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        x = self.patch_embed(_checked_images(x, self.in_chans))
        intermediates = []
        for i, stage in enumerate(self.stages):
            if stop_early and i > max_index:
                break
            x = stage(x)
            if i in take_indices:
                normed = norm and str(i) in self.out_norms
                intermediates.append(self.out_norms[str(i)](x) if normed else x)
        return intermediates if intermediates_only else (x, intermediates)

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True):
        """timm's feature API: drop the stages after the last of ``indices``.

        ``out_indices`` becomes the kept indices, with their out norms unless ``prune_norm``
        drops them all. ``prune_head`` concerns the classifier. Returns the kept indices.
        """
        take_indices, max_index = feature_take_indices(len(self.stages), indices)
        self.stages = self.stages[:max_index + 1]
        self.num_features = self.embed_dims[max_index]
        self.out_indices = tuple(sorted(set(take_indices)))
        kept_norms = set() if prune_norm else {str(i) for i in self.out_indices}
        self.out_norms = nn.ModuleDict(
            {name: norm for name, norm in self.out_norms.items() if name in kept_norms})
        return take_indices

    def forward(self, x):
        return tuple(self.forward_intermediates(x, self.out_indices, norm=True, stop_early=True,
                                                intermediates_only=True))


class ClassifierHead(nn.Module):
    """The authors' ImageNet head: 1x1 conv to ``hidden_dim``, BN, Swish, global pool, then
    a linear layer to the classes (the authors' 1x1 conv classifier, as ``nn.Linear``).

    ``pool_type`` is timm's global pooling; ``'avg'`` is the authors'. With ``''`` nothing
    is pooled and each layer runs per pixel, as in timm's MobileNetV3 head: the output is
    the (B, hidden_dim, H, W) map after conv, BN and Swish, or per-pixel logits when there
    are classes. ``hidden_dim=0`` leaves out the conv, BN and Swish.
    """

    def __init__(self, in_dim, hidden_dim=1024, num_classes=1000, norm_layer=None,
                 drop_rate=0.0, pool_type='avg'):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        if hidden_dim:
            self.proj = nn.Conv2d(in_dim, hidden_dim, 1)
            self.norm = norm_layer(hidden_dim)
            self.act = nn.SiLU()
        else:
            self.proj, self.norm, self.act = nn.Identity(), nn.Identity(), nn.Identity()
        self.hidden_dim = hidden_dim or in_dim
        self.drop = nn.Dropout(drop_rate)
        self.reset(num_classes, pool_type)

    def reset(self, num_classes: int, pool_type: str | None = None, device=None, dtype=None):
        """A new classifier for ``num_classes`` (0: none); new pooling if ``pool_type`` is
        given."""
        if pool_type is not None:
            self.global_pool = SelectAdaptivePool2d(pool_type=pool_type, flatten=bool(pool_type))
        self.num_features = self.hidden_dim * self.global_pool.feat_mult()
        self.fc = (nn.Linear(self.num_features, num_classes, device=device, dtype=dtype)
                   if num_classes > 0 else nn.Identity())

    def forward(self, x, pre_logits: bool = False):
        x = self.global_pool(self.act(self.norm(self.proj(x))))
        if pre_logits:
            return x
        x = self.drop(x)
        if self.global_pool.is_identity():
            return self.fc(x.movedim(1, -1)).movedim(-1, 1)   # channels-first, per pixel
        return self.fc(x)


# The input conv and the classifier, by the names timm's pretrained cfgs give them.
FIRST_CONV = 'patch_embed.proj.0'
CLASSIFIER = 'head.fc'


def checkpoint_filter_fn(state_dict, model: nn.Module, source: str = 'checkpoint'):
    """timm's weight filter: an ImageNet checkpoint as ``model``'s complete state dict.

    Takes the authors' file as loaded (or its state dict, or an mmrala one) and maps the
    names. As timm does, the stem is adapted to ``model.in_chans`` and a classifier of
    another class count is replaced, here by ``model``'s own ``head.fc``. Any other
    missing, unexpected or misshapen weight raises ``CheckpointError`` naming the keys.
    """
    state = extract_state_dict(state_dict)
    if is_official_layout(state):
        state = convert_official_state_dict(state)
    model_state = model.state_dict()
    stem = f'{FIRST_CONV}.weight'
    if stem in state and stem in model_state and state[stem].shape[1] != model.in_chans:
        state[stem] = adapt_input_conv(model.in_chans, state[stem])
    classifier = f'{CLASSIFIER}.'
    fc_fits = all(name in model_state and model_state[name].shape == value.shape
                  for name, value in state.items() if name.startswith(classifier))
    if not fc_fits:
        state = {k: v for k, v in state.items() if not k.startswith(classifier)}
        state.update((k, v) for k, v in model_state.items() if k.startswith(classifier))
    state, _ = check_backbone_state_dict(model_state, state, source=source)
    return state


class RAVLTClassifier(RAVLT):
    """RAVLT with the authors' ImageNet head, following timm's model API.

    ``forward_features`` returns the last stage's map, of ``num_features`` channels (512;
    640 for L). ``forward_head`` runs :class:`ClassifierHead`, whose pooled width is
    ``head_hidden_size`` (1024). ``global_pool=''`` keeps the map unpooled.

    Args:
        num_classes: classes of the classifier; 0 for none (``forward`` then returns the
            pooled features, or the unpooled map with ``global_pool=''``).
        global_pool: timm's pooling type; ``'avg'`` is the authors'.
        head_hidden_size: width of the head's 1x1 conv (the authors' 1024).
        drop_rate: dropout before the classifier.
        in_chans: channels of the input image (``in_channels`` is accepted too).
        **kwargs: the other arguments of :class:`RAVLT`.
    """

    def __init__(self, arch='t', num_classes: int = 1000, global_pool: str = 'avg',
                 head_hidden_size: int = 1024, drop_rate: float = 0.0, in_chans: int = 3,
                 **kwargs):
        kwargs.setdefault('out_indices', (-1,))
        kwargs.setdefault('out_norm', False)
        super().__init__(arch, in_channels=kwargs.pop('in_channels', in_chans), **kwargs)
        self.num_classes = num_classes
        with _device_context(kwargs.get('device')):
            self.head = ClassifierHead(self.num_features, head_hidden_size, num_classes,
                                       kwargs.get('norm_layer'), drop_rate, global_pool)
        self.head.apply(self._init_weights)
        if kwargs.get('dtype') is not None:
            self.head.to(dtype=kwargs['dtype'])
        self.head_hidden_size = self.head.num_features

    def forward_features(self, x):
        return self.stages(self.patch_embed(_checked_images(x, self.in_chans)))

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self):
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool: str | None = None):
        self.num_classes = num_classes
        self.head.reset(num_classes, global_pool, **_factory_kwargs(self))
        self.head_hidden_size = self.head.num_features

    def prune_intermediate_layers(self, indices=1, prune_norm: bool = False,
                                  prune_head: bool = True):
        take_indices = super().prune_intermediate_layers(indices, prune_norm, prune_head)
        if prune_head:
            # The head's conv reads the last stage's channels, which may be gone: the whole
            # head goes, as MobileNetV3's conv head does in timm.
            self.head = ClassifierHead(self.num_features, hidden_dim=0, num_classes=0,
                                       pool_type='')
            self.num_classes = 0
            self.head_hidden_size = self.num_features
        return take_indices

    def load_pretrained(self, checkpoint_path):
        """Load an ImageNet file strictly (see :func:`checkpoint_filter_fn`).

        timm calls this for ``pretrained=True`` (the default cfgs set ``custom_load``), so
        the file is read by mmrala's weights-only loader.
        """
        checkpoint_path = os.fspath(checkpoint_path)
        if not os.path.isfile(checkpoint_path):
            origin = (getattr(self, 'pretrained_cfg', {}).get('origin_url')
                      or "the authors' release")
            raise FileNotFoundError(
                f'no weights file at {checkpoint_path!r}. Download it from {origin} and pass '
                "timm.create_model(..., pretrained=True, pretrained_cfg_overlay=dict(file=PATH)).")
        state = checkpoint_filter_fn(load_checkpoint_file(checkpoint_path), self,
                                     source=checkpoint_path)
        self.load_state_dict(state)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
