"""The ImageNet pixel statistics that the encoders' inputs and the decoder's outputs are normalized with."""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
