"""ImageNet's pixel statistics: the input normalization of the DINOv2 and MAE encoders (and the decoders that undo
it), and diffusers' default for an RAE whose config names none."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
