"""Timing harness shared by the PyTorch halves of the benchmark workloads.

Each workload script builds its model, optimiser and a batch of the right
shape, then calls run(): a warm-up of max(3, steps / 10) steps, then `steps`
timed steps (forward, loss, backward, optimiser step). It prints one JSON
line with the same fields as ./train --bench, plus the model FLOPs of one
step. Those are 3 × (2 × the multiply-adds of every Linear, Conv2d and
attention product in the forward pass), for forward, input gradient and
weight gradient.
"""

import argparse
import json
import resource
import time

import torch
import torch.nn as nn


def parse_args(doc):
    ap = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=20, help="timed steps")
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return args


def forward_flops(model, *inputs):
    """Multiply-adds × 2 of the Linear and Conv2d layers in one forward pass."""
    total = [0]

    def count(module, inp, out):
        if isinstance(module, nn.Linear):
            total[0] += 2 * out.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            total[0] += 2 * out.numel() * per_output
        elif isinstance(module, nn.MultiheadAttention):
            # PyTorch 1.13 applies in_proj and out_proj with F.linear inside
            # F.multi_head_attention_forward, so out_proj's own hook never
            # fires and both projections are counted here. The score and
            # value products are L² · d multiply-adds each.
            seq, batch, d = inp[0].shape
            total[0] += 2 * seq * batch * d * 3 * d + 2 * seq * batch * d * d
            total[0] += 2 * 2 * batch * seq * seq * d

    hooks = [m.register_forward_hook(count) for m in model.modules()
             if isinstance(m, (nn.Linear, nn.Conv2d, nn.MultiheadAttention))]
    with torch.no_grad():
        model(*inputs)
    for h in hooks:
        h.remove()
    return total[0]


def run(args, model, optimizer, step_loss, flops_forward):
    """Time args.steps calls of one training step; step_loss() returns the loss."""
    def step():
        optimizer.zero_grad(set_to_none=True)
        loss = step_loss()
        loss.backward()
        optimizer.step()
        return loss

    warmup = max(3, args.steps // 10)
    for _ in range(warmup):
        step()
    start = time.perf_counter()
    loss = None
    for _ in range(args.steps):
        loss = step()
    seconds = time.perf_counter() - start
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    print(json.dumps({"steps": args.steps, "warmup": warmup, "seconds": round(seconds, 6),
                      "steps_per_second": round(args.steps / seconds, 4), "threads": torch.get_num_threads(),
                      "peak_rss_mb": round(peak, 1), "loss": float(loss), "flops_per_step": 3 * flops_forward}))


def run_classifier(args, model, image_shape, lr, weight_decay):
    """Time a 10-class image classifier on a random batch of image_shape
    (N, C, H, W): cross-entropy, SGD with momentum 0.9."""
    x = torch.rand(*image_shape)
    y = torch.randint(0, 10, (image_shape[0],))
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=weight_decay)
    flops = forward_flops(model, x)
    run(args, model, opt, lambda: nn.functional.cross_entropy(model(x), y), flops)
