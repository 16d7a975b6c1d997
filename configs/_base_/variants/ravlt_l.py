# RAVLT-L (RAVLT.md section 5): the facts every RAVLT-L config takes from here.
# Plain variables, referenced by the configs as {{_base_.ravlt.KEY}}.
ravlt = dict(
    arch='l',
    channels=[96, 192, 448, 640],  # outputs at strides 4, 8, 16, 32
    stage3_channels=448,  # input of UperNet's auxiliary FCN head
    stage4_channels=640,  # input of the ImageNet neck
    drop_path_rate=0.55,  # the authors' value, for ImageNet and downstream alike
    checkpoint='checkpoints/RAVLT_L.pth',  # the authors' ImageNet file
)
