"""ImageNet's per-channel mean and std, the input normalization torchvision's weights expect.

Kept free of torch so that the CLI can show them as defaults without importing it.
"""

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
