# UperNet 160k with RAVLT-B on ADE20K: upernet_ravlt_s_ade20k.py with the B variant.
_base_ = './upernet_ravlt_s_ade20k.py'
pretrained = 'checkpoints/RAVLT_B.pth'

model = dict(backbone=dict(arch='b', drop_path_rate=0.4, init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[96, 192, 384, 512]), auxiliary_head=dict(in_channels=384))

paper_results = dict(mIoU=52.5, params_M=77)
