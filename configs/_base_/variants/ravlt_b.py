# RAVLT-B (RAVLT.md section 5): the facts every RAVLT-B config takes from here.
# Plain variables, referenced by the configs as {{_base_.ravlt.KEY}}.
ravlt = dict(
    arch='b',
    channels=[96, 192, 384, 512],  # outputs at strides 4, 8, 16, 32
    stage3_channels=384,  # input of UperNet's auxiliary FCN head
    stage4_channels=512,  # input of the ImageNet neck
    drop_path_rate=0.4,  # the authors' value, for ImageNet and downstream alike
    checkpoint='checkpoints/RAVLT_B.pth',  # the authors' ImageNet file
)
