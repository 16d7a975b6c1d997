"""Training hooks of the OpenMMLab glue."""
from __future__ import annotations

import math

import torch
from mmengine.hooks import Hook
from mmengine.registry import HOOKS


def _nonfinite_images(data_batch):
    """Indices of the images of a (not yet preprocessed) batch that hold NaN or Inf."""
    inputs = data_batch.get('inputs') if isinstance(data_batch, dict) else None
    if inputs is None:
        return []
    if isinstance(inputs, torch.Tensor):
        inputs = list(inputs)
    return [i for i, img in enumerate(inputs)
            if isinstance(img, torch.Tensor) and img.is_floating_point()
            and not bool(torch.isfinite(img).all())]


def _image_names(data_batch, indices):
    samples = data_batch.get('data_samples') or []
    names = []
    for i in indices:
        meta = samples[i].metainfo if i < len(samples) and hasattr(samples[i], 'metainfo') else {}
        names.append(meta.get('img_path') or f'image {i} of the batch')
    return names


@HOOKS.register_module()
class FiniteLossHook(Hook):
    """Stop training at the first NaN or Inf loss and say where it came from.

    Why a hook: in fp32 a NaN loss silently turns every weight into NaN at the next
    optimizer step, and under ``--amp`` (``AmpOptimWrapper``) the gradient scaler just
    skips the step and lowers the scale, so a batch with NaN or Inf pixels, or a
    diverging run, trains on without a word. The check reads the loss the model already
    returned for logging, so it costs nothing extra. The checkpoint saved before the
    failing iteration is untouched.

    The error names the images of the batch that hold non-finite values (a pipeline or
    a float-image source put them there; decoded 8-bit images cannot), or, when every
    input is finite, reports a divergence and what to lower.
    """

    priority = 'VERY_HIGH'  # before the checkpoint and logger hooks of the same iteration

    def after_train_iter(self, runner, batch_idx, data_batch=None, outputs=None):
        loss = (outputs or {}).get('loss')
        if loss is None:
            return
        value = float(loss.detach().float().mean()) if isinstance(loss, torch.Tensor) else float(loss)
        if math.isfinite(value):
            return
        where = f'iteration {runner.iter + 1} (epoch {runner.epoch + 1})'
        bad = _nonfinite_images(data_batch)
        if bad:
            raise FloatingPointError(
                f'The training loss is {value} at {where} because the input batch holds '
                f'NaN or Inf pixel values in: {", ".join(map(str, _image_names(data_batch, bad)))}. '
                'Fix the data or the pipeline step that produces them (e.g. a custom '
                'transform dividing by zero, or float images with missing values), then '
                'resume from the last checkpoint with --resume.')
        raise FloatingPointError(
            f'The training loss is {value} at {where} with finite inputs: training '
            'diverged. Resume from the last checkpoint (--resume) with a lower learning '
            'rate or gradient clipping (optim_wrapper.clip_grad=dict(max_norm=1.0) in the '
            'config); '
            "with --amp on fp16, bfloat16 is safer (optim_wrapper.dtype='bfloat16').")
