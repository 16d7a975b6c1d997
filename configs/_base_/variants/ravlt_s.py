# RAVLT-S (RAVLT.md section 5): the facts every RAVLT-S config takes from here.
# Plain variables, referenced by the configs as {{_base_.ravlt.KEY}}.
ravlt = dict(
    arch='s',
    channels=[64, 128, 320, 512],  # outputs at strides 4, 8, 16, 32
    stage3_channels=320,  # input of UperNet's auxiliary FCN head
    stage4_channels=512,  # input of the ImageNet neck
    drop_path_rate=0.15,  # the authors' value, for ImageNet and downstream alike
    checkpoint='checkpoints/RAVLT_S.pth',  # the authors' ImageNet file
)
