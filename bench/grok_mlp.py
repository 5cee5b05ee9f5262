"""PyTorch half of benchmark workload grok_mlp (see grok_mlp.ini).

The grokking MLP with p = 97: one-hot(a) and one-hot(b) concatenated (194
inputs), four hidden layers of 100 with ReLU, 97 outputs, MSE against
one-hot(a + b mod p), full batch of 30 % of the p² pairs (2 822), AdamW lr
1e-3 betas (0.9, 0.98) weight decay 1.0.
"""

import torch
import torch.nn as nn
import torch.nn.functional as F

import common

P = 97


def main():
    args = common.parse_args(__doc__)
    layers, width = [], 2 * P
    for _ in range(4):
        layers += [nn.Linear(width, 100), nn.ReLU()]
        width = 100
    model = nn.Sequential(*layers, nn.Linear(width, P))
    pairs = torch.randperm(P * P)[: int(0.3 * P * P)]
    a, b = pairs // P, pairs % P
    x = torch.cat([F.one_hot(a, P), F.one_hot(b, P)], dim=1).float()
    target = F.one_hot((a + b) % P, P).float()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)
    flops = common.forward_flops(model, x)
    common.run(args, model, opt, lambda: F.mse_loss(model(x), target), flops)


if __name__ == "__main__":
    main()
