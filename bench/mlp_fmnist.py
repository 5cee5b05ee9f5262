"""PyTorch half of benchmark workload mlp_fmnist (see mlp_fmnist.ini).

MLP 784-256-256-256-10 with ReLU, cross-entropy, SGD lr 0.01 momentum 0.9
weight decay 5e-4, batch 128 of random images and labels.
"""

import torch.nn as nn

import common


def main():
    args = common.parse_args(__doc__)
    model = nn.Sequential(nn.Flatten(), nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                          nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10))
    common.run_classifier(args, model, (128, 1, 28, 28), lr=0.01, weight_decay=5e-4)


if __name__ == "__main__":
    main()
