"""Train the grokking Transformer of configs/grokking_wd.ini in PyTorch.

This is the model of the reference code of Yunis et al. (2024), "Approaching
Deep Learning through the Spectral Dynamics of Weights" (repository
dyunis/spectral_dynamics, modular_addition/): an nn.TransformerEncoder of
one norm_first layer with its LayerNorms replaced by identity, a causal mask,
token embedding times sqrt(d_model) plus sinusoidal positions, an
nn.Linear decoder, cross-entropy at the last position, full-batch AdamW.

It answers two questions about specdyn's run:
  * does specdyn compute the same thing? --init-from loads specdyn's step-0
    checkpoint and --split specdyn reproduces specdyn's data split, so the
    losses of both programs can be compared step by step;
  * how far does the grokking step move with the random draw? --init torch
    and --split python use PyTorch's and Python's own generators, as the
    reference code does.

Run with Debian's interpreter, which has python3-torch:

    /usr/bin/python3 bench/grok_torch.py --steps 3000 --init-from \
        runs/grokking_wd/checkpoints/step_00000000.safetensors --split specdyn \
        --out /tmp/torch_same.csv

It prints and writes "step,train_loss,train_acc,val_loss,val_acc,seconds" every
--log-every steps; train metrics are those of the batch before the update at
that step, like specdyn's metrics.csv.
"""

import argparse
import json
import math
import random
import struct
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

MASK64 = (1 << 64) - 1


class Xoshiro:
    """specdyn's generator (core/rng.c): xoshiro256** seeded by splitmix64."""

    def __init__(self, seed, stream):
        x = (seed ^ (stream * 0xD1B54A32D192ED03)) & MASK64
        self.s = []
        for _ in range(4):
            x = (x + 0x9E3779B97F4A7C15) & MASK64
            z = x
            z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & MASK64
            z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & MASK64
            self.s.append(z ^ (z >> 31))

    @staticmethod
    def _rotl(x, k):
        return ((x << k) | (x >> (64 - k))) & MASK64

    def next(self):
        s = self.s
        result = (self._rotl((s[1] * 5) & MASK64, 7) * 9) & MASK64
        t = (s[1] << 17) & MASK64
        s[2] ^= s[0]
        s[3] ^= s[1]
        s[1] ^= s[2]
        s[0] ^= s[3]
        s[2] ^= t
        s[3] = self._rotl(s[3], 45)
        return result

    def below(self, n):
        limit = MASK64 - MASK64 % n
        while True:
            x = self.next()
            if x < limit:
                return x % n


def specdyn_split(p, seed, train_frac):
    """Return the pair split of tasks/modular.c: a Fisher-Yates shuffle with stream 2."""
    order = list(range(p * p))
    g = Xoshiro(seed, 2)
    for i in range(len(order) - 1, 0, -1):
        j = g.below(i + 1)
        order[i], order[j] = order[j], order[i]
    n_train = int(math.floor(train_frac * p * p))
    pairs = [(k // p, k % p) for k in order]
    return pairs[:n_train], pairs[n_train:]


def python_split(p, seed, train_frac):
    """Return the reference code's split: random.seed(seed); random.shuffle(pairs)."""
    pairs = [(i, j) for i in range(p) for j in range(p)]
    random.seed(seed)
    random.shuffle(pairs)
    n_train = int(train_frac * len(pairs))
    return pairs[:n_train], pairs[n_train:]


class PositionalEncoding(nn.Module):
    def __init__(self, d_model, max_len=16):
        super().__init__()
        position = torch.arange(max_len).unsqueeze(1)
        div_term = torch.exp(torch.arange(0, d_model, 2) * (-math.log(10000.0) / d_model))
        pe = torch.zeros(max_len, 1, d_model)
        pe[:, 0, 0::2] = torch.sin(position * div_term)
        pe[:, 0, 1::2] = torch.cos(position * div_term)
        self.register_buffer("pe", pe)

    def forward(self, x):
        return x + self.pe[: x.size(0)]


class GrokTransformer(nn.Module):
    def __init__(self, n_tokens, d_model=128, n_heads=4, d_hid=512):
        super().__init__()
        self.d_model = d_model
        self.pos = PositionalEncoding(d_model)
        self.encoder = nn.Embedding(n_tokens, d_model)
        layer = nn.TransformerEncoderLayer(d_model, n_heads, d_hid, 0.0, norm_first=True)
        self.transformer = nn.TransformerEncoder(layer, 1)
        for block in self.transformer.layers:
            block.norm1 = nn.Identity()
            block.norm2 = nn.Identity()
        self.decoder = nn.Linear(d_model, n_tokens)
        self.encoder.weight.data.uniform_(-0.1, 0.1)
        self.decoder.bias.data.zero_()
        self.decoder.weight.data.uniform_(-0.1, 0.1)

    def forward(self, tokens):
        src = tokens.t()
        x = self.encoder(src) * math.sqrt(self.d_model)
        x = self.pos(x)
        mask = torch.triu(torch.full((src.size(0), src.size(0)), float("-inf")), diagonal=1)
        x = self.transformer(x, mask)
        return self.decoder(x)[-1]


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        begin, end = info["data_offsets"]
        out[name] = np.frombuffer(data[base + begin : base + end], dtype=np.float32).reshape(info["shape"])
    return out


def load_specdyn_weights(model, path):
    w = read_safetensors(path)
    t = lambda name: torch.from_numpy(w[name].copy())
    with torch.no_grad():
        model.encoder.weight.copy_(t("embed.weight"))
        block = model.transformer.layers[0]
        attn = block.self_attn
        attn.in_proj_weight.copy_(torch.cat([t("blocks.0.attn.wq.weight"), t("blocks.0.attn.wk.weight"),
                                             t("blocks.0.attn.wv.weight")]))
        attn.in_proj_bias.copy_(torch.cat([t("blocks.0.attn.wq.bias"), t("blocks.0.attn.wk.bias"),
                                           t("blocks.0.attn.wv.bias")]))
        attn.out_proj.weight.copy_(t("blocks.0.attn.wo.weight"))
        attn.out_proj.bias.copy_(t("blocks.0.attn.wo.bias"))
        block.linear1.weight.copy_(t("blocks.0.mlp.w1.weight"))
        block.linear1.bias.copy_(t("blocks.0.mlp.w1.bias"))
        block.linear2.weight.copy_(t("blocks.0.mlp.w2.weight"))
        block.linear2.bias.copy_(t("blocks.0.mlp.w2.bias"))
        model.decoder.weight.copy_(t("unembed.weight"))
        model.decoder.bias.copy_(t("unembed.bias"))


def to_tensors(pairs, p):
    a = torch.tensor([x for x, _ in pairs])
    b = torch.tensor([y for _, y in pairs])
    tokens = torch.stack([a, b, torch.full_like(a, p)], dim=1)
    return tokens, (a + b) % p


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--p", type=int, default=113)
    ap.add_argument("--train-frac", type=float, default=0.3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--steps", type=int, default=40000)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--weight-decay", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--split", choices=["python", "specdyn"], default="python")
    ap.add_argument("--init-from", help="specdyn checkpoint to start from instead of PyTorch's initialisation")
    ap.add_argument("--log-every", type=int, default=100)
    ap.add_argument("--out", help="CSV file for the metrics")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    split = specdyn_split if args.split == "specdyn" else python_split
    train, val = split(args.p, args.seed, args.train_frac)
    x_train, y_train = to_tensors(train, args.p)
    x_val, y_val = to_tensors(val, args.p)
    model = GrokTransformer(args.p + 1)
    if args.init_from:
        load_specdyn_weights(model, args.init_from)
    opt = torch.optim.AdamW(model.parameters(), lr=args.lr, betas=(0.9, 0.98), eps=1e-8,
                            weight_decay=args.weight_decay)
    out = open(args.out, "w") if args.out else None
    header = "step,train_loss,train_acc,val_loss,val_acc,seconds"
    print(header)
    if out:
        out.write(header + "\n")
    start = time.time()
    loss_sum = acc_sum = 0.0
    count = 0
    for step in range(1, args.steps + 1):
        logits = model(x_train)
        loss = F.cross_entropy(logits, y_train)
        loss_sum += loss.item()
        acc_sum += (logits.argmax(-1) == y_train).float().mean().item()
        count += 1
        opt.zero_grad()
        loss.backward()
        opt.step()
        if step % args.log_every == 0:
            with torch.no_grad():
                vl = model(x_val)
                val_loss = F.cross_entropy(vl, y_val).item()
                val_acc = (vl.argmax(-1) == y_val).float().mean().item()
            line = "%d,%.9g,%.6f,%.9g,%.6f,%.1f" % (step, loss_sum / count, acc_sum / count, val_loss, val_acc,
                                                  time.time() - start)
            print(line, flush=True)
            if out:
                out.write(line + "\n")
                out.flush()
            loss_sum = acc_sum = 0.0
            count = 0


if __name__ == "__main__":
    sys.exit(main())
