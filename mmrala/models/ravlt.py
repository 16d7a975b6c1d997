"""RAVLT: Rank-Augmented Vision Linear Transformer (Fan, Huang, He, CVPR 2025).

Plain ``torch.nn`` modules: this file imports only torch, timm's small layers and
``mmrala.ops``, so the network runs on a machine without OpenMMLab. Everything is
channels-first (B, C, H, W) like the authors' code; every "linear" is a 1x1 conv.

Two models share the trunk:

* :class:`RAVLT` -- the dense-prediction backbone. It returns the outputs of the
  stages in ``out_indices`` (strides 4, 8, 16, 32), each through its own LayerNorm.
* :class:`RAVLTClassifier` -- the ImageNet model with the authors' head
  (1x1 conv to 1024, BN, Swish, global pool, 1x1 conv to the classes).

Module names are mmrala's own; ``mmrala.convert`` maps the authors' checkpoint names
onto them.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint
from timm.layers import DropPath, LayerNorm2d, trunc_normal_

from ..ops import RALA_IMPLS, apply_rope, rala_attention, rope_pair_phases

__all__ = ['ATTN_TYPES', 'ARCH_SETTINGS', 'RAVLT', 'RAVLTClassifier', 'RAVLTBlock',
           'ClassifierHead', 'resolve_arch']

ATTN_TYPES = ('rala', 'softmax')
DEFAULT_ATTN_TYPES = ('rala', 'rala', 'softmax', 'softmax')
LN_EPS = 1e-6

# The released variants (spec RAVLT.md section 5). ``drop_path_rate`` is the authors'
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
        qkv, gate = qkvo[:, :3 * self.dim], qkvo[:, 3 * self.dim:]
        lepe = self.lepe(qkv[:, 2 * self.dim:])
        if self.attn_type == 'rala':
            out = rala_attention(qkv, self.num_heads, self.rala_impl)
        else:
            out = self._softmax_core(qkv)
        return self.proj((out + lepe) * gate)

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


class RAVLT(nn.Module):
    """RAVLT dense-prediction backbone (detection, segmentation).

    Args:
        arch: ``'t'``, ``'s'``, ``'b'``, ``'l'`` or a dict with ``embed_dims``, ``depths``,
            ``num_heads``, ``mlp_ratios`` and ``layer_scale_init_values`` (one per stage).
        in_channels: channels of the input image.
        attn_types: attention per stage, ``'rala'`` or ``'softmax'``. The released models
            use RALA in stages 1-2 and softmax attention in stages 3-4.
        out_indices: stages whose outputs are returned (0 = stride 4, 3 = stride 32).
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
    """

    def __init__(self, arch='t', in_channels: int = 3,
                 attn_types: Sequence[str] = DEFAULT_ATTN_TYPES,
                 out_indices: Sequence[int] = (0, 1, 2, 3), out_norm: bool = True,
                 drop_path_rate: float | None = None, frozen_stages: int = -1,
                 norm_eval: bool = False, with_cp: bool = False,
                 norm_layer: Callable[[int], nn.Module] | None = None,
                 rala_impl: str = 'auto'):
        super().__init__()
        settings = resolve_arch(arch)
        self.arch_settings = settings
        num_stages = len(settings['depths'])
        self.embed_dims = list(settings['embed_dims'])
        self.num_heads = list(settings['num_heads'])
        self.in_channels = in_channels

        attn_types = tuple(attn_types)
        bad = [t for t in attn_types if t not in ATTN_TYPES]
        if bad or len(attn_types) != num_stages:
            raise ValueError(f'attn_types must give one of {ATTN_TYPES} for each of the '
                             f'{num_stages} stages, got {attn_types}.')
        self.attn_types = attn_types
        out_indices = tuple(i + num_stages if i < 0 else i for i in out_indices)
        if not out_indices or any(not 0 <= i < num_stages for i in out_indices):
            raise ValueError(f'out_indices must be stage indices in [0, {num_stages - 1}], '
                             f'got {out_indices}.')
        self.out_indices = out_indices
        if not -1 <= frozen_stages <= num_stages:
            raise ValueError(f'frozen_stages must be in [-1, {num_stages}], got {frozen_stages}.')
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval
        norm_layer = norm_layer or nn.BatchNorm2d
        if drop_path_rate is None:
            drop_path_rate = settings['drop_path_rate']

        self.patch_embed = PatchEmbed(in_channels, self.embed_dims[0], norm_layer)
        block_rates = torch.linspace(0, drop_path_rate, sum(settings['depths'])).tolist()
        self.stages = nn.ModuleList()
        first_block = 0
        for i in range(num_stages):
            depth = settings['depths'][i]
            self.stages.append(RAVLTStage(
                in_dim=self.embed_dims[i - 1] if i else None, dim=self.embed_dims[i],
                depth=depth, num_heads=self.num_heads[i], mlp_ratio=settings['mlp_ratios'][i],
                attn_type=attn_types[i], drop_paths=block_rates[first_block:first_block + depth],
                layer_scale_init_value=settings['layer_scale_init_values'][i],
                norm_layer=norm_layer, rala_impl=rala_impl, with_cp=with_cp))
            first_block += depth
        # Only the returned stages get a norm: an unused one would break DDP's gradient check.
        self.out_norms = nn.ModuleDict(
            {str(i): LayerNorm2d(self.embed_dims[i], eps=LN_EPS) for i in out_indices}
            if out_norm else {})
        self.apply(self._init_weights)
        self._freeze_stages()

    @staticmethod
    def _init_weights(module):
        if isinstance(module, (nn.Conv2d, nn.Linear)):
            trunc_normal_(module.weight, std=0.02)
            if module.bias is not None:
                nn.init.zeros_(module.bias)

    @property
    def with_cp(self) -> bool:
        return all(stage.with_cp for stage in self.stages)

    @with_cp.setter
    def with_cp(self, enabled: bool):
        for stage in self.stages:
            stage.with_cp = enabled

    def set_rala_impl(self, impl: str):
        """Switch every RALA block to ``impl`` (``'auto'``, ``'torch'`` or ``'triton'``)."""
        if impl not in RALA_IMPLS:
            raise ValueError(f'unknown rala_impl {impl!r}; choose one of {RALA_IMPLS}.')
        for module in self.modules():
            if isinstance(module, RAVLTAttention):
                module.rala_impl = impl

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

    def _check_input(self, x):
        if x.dim() != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f'RAVLT expects images of shape (B, {self.in_channels}, H, W), got '
                             f'{tuple(x.shape)}; fix the data pipeline, or build the backbone '
                             'with in_channels matching the data (and train or convert the stem).')

    def forward_stages(self, x):
        """Outputs of every stage (before the out norms)."""
        self._check_input(x)
        x = self.patch_embed(x)
        outs = []
        for stage in self.stages:
            x = stage(x)
            outs.append(x)
        return outs

    def forward(self, x):
        outs = self.forward_stages(x)
        return tuple(self.out_norms[str(i)](outs[i]) if str(i) in self.out_norms else outs[i]
                     for i in self.out_indices)


class ClassifierHead(nn.Module):
    """The authors' head: 1x1 conv to ``hidden_dim``, BN, Swish, global average pool,
    then a 1x1 conv (here the equivalent ``nn.Linear``) to the classes."""

    def __init__(self, in_dim, hidden_dim=1024, num_classes=1000, norm_layer=None, drop_rate=0.0):
        super().__init__()
        norm_layer = norm_layer or nn.BatchNorm2d
        self.proj = nn.Conv2d(in_dim, hidden_dim, 1)
        self.norm = norm_layer(hidden_dim)
        self.act = nn.SiLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(drop_rate)
        self.num_features = hidden_dim
        self.fc = nn.Linear(hidden_dim, num_classes) if num_classes > 0 else nn.Identity()

    def reset(self, num_classes):
        self.fc = (nn.Linear(self.num_features, num_classes) if num_classes > 0
                   else nn.Identity())

    def forward(self, x, pre_logits: bool = False):
        x = self.pool(self.act(self.norm(self.proj(x)))).flatten(1)
        return x if pre_logits else self.fc(self.drop(x))


class RAVLTClassifier(RAVLT):
    """RAVLT with the ImageNet head (timm-style ``forward_features`` / ``forward_head``)."""

    def __init__(self, arch='t', num_classes: int = 1000, head_hidden_dim: int = 1024,
                 drop_rate: float = 0.0, in_chans: int = 3, **kwargs):
        kwargs.setdefault('out_indices', (-1,))
        kwargs.setdefault('out_norm', False)
        super().__init__(arch, in_channels=kwargs.pop('in_channels', in_chans), **kwargs)
        self.num_classes = num_classes
        self.head = ClassifierHead(self.embed_dims[-1], head_hidden_dim, num_classes,
                                   kwargs.get('norm_layer'), drop_rate)
        self.num_features = self.head_hidden_size = head_hidden_dim
        self.head.apply(self._init_weights)

    def forward_features(self, x):
        return self.forward_stages(x)[-1]

    def forward_head(self, x, pre_logits: bool = False):
        return self.head(x, pre_logits=pre_logits)

    def get_classifier(self):
        return self.head.fc

    def reset_classifier(self, num_classes: int, global_pool=None):
        self.num_classes = num_classes
        self.head.reset(num_classes)

    def forward(self, x):
        return self.forward_head(self.forward_features(x))
