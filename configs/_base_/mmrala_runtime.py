# What every mmrala config declares, so that OpenMMLab's stock tools/train.py and
# tools/test.py (mmdet's, mmseg's, mmpretrain's) give the same guarantees as mmrala's:
# - MMRalaRunner: GPU recipes run on CPU-only machines (gloo, plain BN, fp32), every
#   checkpoint loads strictly and weights-only, --resume continues only from an intact
#   checkpoint, checkpoints are written crash-safe, dataset errors name their file, and a
#   distributed run whose peer stops answering fails within env_cfg.dist_cfg.timeout.
# - FiniteLossHook: stops at the first NaN/Inf loss, naming the images that caused it.
# - RNGStateHook: --resume of an iteration-based run continues exactly.
custom_imports = dict(imports=['mmrala'], allow_failed_imports=False)
runner_type = 'MMRalaRunner'
custom_hooks = [dict(type='FiniteLossHook'), dict(type='RNGStateHook')]
