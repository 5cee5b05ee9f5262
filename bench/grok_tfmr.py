"""PyTorch half of benchmark workload grok_tfmr (see grok_tfmr.ini).

The grokking Transformer of bench/grok_torch.py (the reference model of
Yunis et al.) with p = 113: full batch of 30 % of the p² pairs (3 830),
cross-entropy at the last position, AdamW lr 1e-3 betas (0.9, 0.98)
weight decay 1.0.
"""

import torch
import torch.nn.functional as F

import common
from grok_torch import GrokTransformer, python_split, to_tensors

P = 113


def main():
    args = common.parse_args(__doc__)
    train, _ = python_split(P, 0, 0.3)
    x, y = to_tensors(train, P)
    model = GrokTransformer(P + 1)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)
    flops = common.forward_flops(model, x)
    common.run(args, model, opt, lambda: F.cross_entropy(model(x), y), flops)


if __name__ == "__main__":
    main()
