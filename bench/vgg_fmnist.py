"""PyTorch half of benchmark workload vgg_fmnist (see vgg_fmnist.ini).

VGG-16 with batch norm at width 0.25 (channels 16-32-64-128-128), 1 × 32 × 32
inputs, one Linear classifier, cross-entropy, SGD lr 0.1 momentum 0.9 weight
decay 1e-4, batch 128 of random images and labels.
"""

import torch.nn as nn

import common

PLAN = [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"]


def vgg16_bn(width, in_channels=1, classes=10):
    layers, c = [], in_channels
    for v in PLAN:
        if v == "M":
            layers.append(nn.MaxPool2d(2, 2))
            continue
        out = max(1, round(v * width))
        layers += [nn.Conv2d(c, out, 3, padding=1), nn.BatchNorm2d(out), nn.ReLU(inplace=True)]
        c = out
    return nn.Sequential(*layers, nn.Flatten(), nn.Linear(c, classes))


def main():
    args = common.parse_args(__doc__)
    model = vgg16_bn(0.25).train()
    common.run_classifier(args, model, (128, 1, 32, 32), lr=0.1, weight_decay=1e-4)


if __name__ == "__main__":
    main()
