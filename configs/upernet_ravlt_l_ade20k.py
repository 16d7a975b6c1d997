# UperNet 160k with RAVLT-L on ADE20K: upernet_ravlt_s_ade20k.py with the L variant.
_base_ = './upernet_ravlt_s_ade20k.py'
pretrained = 'checkpoints/RAVLT_L.pth'

model = dict(backbone=dict(arch='l', drop_path_rate=0.55, init_cfg=dict(checkpoint=pretrained)),
             decode_head=dict(in_channels=[96, 192, 448, 640]), auxiliary_head=dict(in_channels=448))

paper_results = dict(mIoU=53.2, params_M=125)
