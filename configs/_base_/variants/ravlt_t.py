# RAVLT-T (RAVLT.md section 5): the facts every RAVLT-T config takes from here.
# Plain variables, referenced by the configs as {{_base_.ravlt.KEY}}.
ravlt = dict(
    arch='t',
    channels=[64, 128, 256, 512],  # outputs at strides 4, 8, 16, 32
    stage3_channels=256,  # input of UperNet's auxiliary FCN head
    stage4_channels=512,  # input of the ImageNet neck
    drop_path_rate=0.1,  # the authors' value, for ImageNet and downstream alike
    checkpoint='checkpoints/RAVLT_T.pth',  # the authors' ImageNet file
)
