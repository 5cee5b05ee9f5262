"""Write the golden values that tests/test_golden.c checks the C code against.

Run from the repository root with Debian's interpreter, which has PyTorch:

    /usr/bin/python3 tests/golden/make_golden.py

Every value is computed by PyTorch in float32 from seeded random inputs, so
rerunning the script with the same PyTorch version rewrites identical files.
It writes, next to this script:

    ops.txt    each op of core/ops.h: inputs, output and input gradients
    model.txt  the Transformer and the MLP: weights, logits, loss, gradients
    optim.txt  SGD, Adam, AdamW steps and clip_grad_norm_
    train.txt  five full-batch AdamW steps of a small Transformer

File format: lines starting with '#' are comments. Every other record is a
header line "name ndim d0 d1 ..." followed by one line with the product of
the dimensions worth of values, written with %.9g so that float32 values
read back exactly. A scalar has ndim 0 and one value. Integer arrays (token
ids, labels) are written as whole numbers in the same form.

For an op with output y the objective is sum(y * R) with a fixed random R,
written as "<case>.r". Its gradient with respect to input "<case>.<input>"
is written as "<case>.grad.<input>". Losses (cross-entropy, MSE) are
differentiated directly.
"""

import math
import os

import torch
import torch.nn as nn
import torch.nn.functional as F

OUT_DIR = os.path.dirname(os.path.abspath(__file__))


class GoldenWriter:
    """Collects named arrays and writes them in the format described above."""

    def __init__(self, filename, description):
        self.path = os.path.join(OUT_DIR, filename)
        self.lines = [
            "# " + description,
            "# Written by tests/golden/make_golden.py with PyTorch %s; do not edit by hand." % torch.__version__,
        ]
        self.names = set()

    def add(self, name, value):
        if name in self.names:
            raise ValueError("duplicate golden name %s in %s" % (name, self.path))
        self.names.add(name)
        if isinstance(value, torch.Tensor):
            t = value.detach().to(torch.float64).cpu()
            shape = list(t.shape)
            flat = t.reshape(-1).tolist()
        else:
            shape = []
            flat = [float(value)]
        self.lines.append(" ".join([name, str(len(shape))] + [str(d) for d in shape]))
        self.lines.append(" ".join("%.9g" % v for v in flat))

    def write(self):
        with open(self.path, "w") as f:
            f.write("\n".join(self.lines) + "\n")
        print("wrote %s (%d arrays)" % (os.path.relpath(self.path), len(self.names)))


def leaf(*shape, scale=1.0):
    """Return a random float32 input that records its gradient."""
    return (torch.randn(*shape) * scale).requires_grad_(True)


def op_case(w, prefix, inputs, output):
    """Write inputs, output, R and the gradient of sum(output * R) w.r.t. every input."""
    r = torch.randn(output.shape)
    for name, t in inputs.items():
        w.add("%s.%s" % (prefix, name), t)
    w.add(prefix + ".r", r)
    w.add(prefix + ".out", output)
    grads = torch.autograd.grad((output * r).sum(), list(inputs.values()))
    for name, g in zip(inputs.keys(), grads):
        w.add("%s.grad.%s" % (prefix, name), g)


def attention_reference(q, k, v, heads, causal):
    """Compute multi-head attention as op_attention defines it.

    The queries q[B, Tq, D] belong to the last Tq of the T positions of k, v.
    Scores are scaled by 1/sqrt(D / heads), and the heads are concatenated
    with no output projection."""
    batch, tq, d = q.shape
    t = k.shape[1]
    dh = d // heads
    qh = q.reshape(batch, tq, heads, dh).transpose(1, 2)
    kh = k.reshape(batch, t, heads, dh).transpose(1, 2)
    vh = v.reshape(batch, t, heads, dh).transpose(1, 2)
    scores = qh @ kh.transpose(-1, -2) / math.sqrt(dh)
    if causal:
        query_pos = torch.arange(t - tq, t)
        masked = torch.arange(t)[None, :] > query_pos[:, None]
        scores = scores.masked_fill(masked, float("-inf"))
    out = torch.softmax(scores, dim=-1) @ vh
    return out.transpose(1, 2).reshape(batch, tq, d)


def write_ops():
    torch.manual_seed(1)
    w = GoldenWriter("ops.txt", "Golden values for the ops of core/ops.h.")

    x, wt, b = leaf(2, 3, 5), leaf(4, 5), leaf(4)
    op_case(w, "linear", {"x": x, "w": wt, "b": b}, F.linear(x, wt, b))
    x, wt = leaf(1, 6), leaf(3, 6)
    op_case(w, "linear_nobias", {"x": x, "w": wt}, F.linear(x, wt))

    a, bm = leaf(3, 5), leaf(5, 2)
    op_case(w, "matmul", {"a": a, "b": bm}, a @ bm)
    a, bm = leaf(1, 4), leaf(4, 3)
    op_case(w, "matmul_row", {"a": a, "b": bm}, a @ bm)

    a, bm = leaf(2, 3, 4), leaf(2, 3, 4)
    op_case(w, "add", {"a": a, "b": bm}, a + bm)

    x, b = leaf(3, 5), leaf(5)
    op_case(w, "add_bias", {"x": x, "b": b}, x + b)
    x, b = leaf(1, 5), leaf(5)
    op_case(w, "add_bias_row", {"x": x, "b": b}, x + b)

    a, bm = leaf(4, 3), leaf(4, 3)
    op_case(w, "mul", {"a": a, "b": bm}, a * bm)

    x = leaf(2, 5)
    scale = -1.7
    w.add("scale.s", scale)
    op_case(w, "scale", {"x": x}, x * scale)

    x = leaf(3, 7)
    op_case(w, "relu", {"x": x}, F.relu(x))

    # Spread over about [-6, 6] so both tails of the normal CDF are exercised.
    # Computed in float64 and stored rounded to float32: PyTorch 1.13's
    # vectorised float32 GELU is off by 1.3e-4 relative at x = -3.32
    # (-0.00147813 against -0.00147791), more than the tests' rtol.
    x = leaf(3, 7, scale=2.5)
    x64 = x.detach().double().requires_grad_(True)
    r = torch.randn(x.shape)
    y64 = F.gelu(x64)
    w.add("gelu.x", x)
    w.add("gelu.r", r)
    w.add("gelu.out", y64.float())
    w.add("gelu.grad.x", torch.autograd.grad((y64 * r.double()).sum(), x64)[0].float())

    # Repeated ids check that the table gradient accumulates.
    table = leaf(7, 4)
    ids = torch.tensor([[3, 0, 3], [6, 1, 3]])
    emb_scale = 2.5
    w.add("embedding.ids", ids)
    w.add("embedding.scale", emb_scale)
    op_case(w, "embedding", {"table": table}, F.embedding(ids, table) * emb_scale)
    table = leaf(5, 3)
    ids = torch.tensor([[4, 2, 2, 0]])
    w.add("embedding_row.ids", ids)
    w.add("embedding_row.scale", 1.0)
    op_case(w, "embedding_row", {"table": table}, F.embedding(ids, table))

    # pos has more rows (Tmax = 5) than the sequence (T = 3).
    x, pos = leaf(2, 3, 4), leaf(5, 4)
    op_case(w, "add_position", {"x": x, "pos": pos}, x + pos[:3])

    x = leaf(2, 5, 3)
    w.add("take_last.n", 2)
    op_case(w, "take_last", {"x": x}, x[:, -2:])

    cases = [
        # name, batch, Tq, T, D, heads, causal
        ("attention_causal", 2, 4, 4, 8, 2, 1),
        ("attention_last", 2, 2, 5, 8, 4, 1),
        ("attention_one_query", 1, 1, 3, 6, 3, 1),
        ("attention_full", 2, 3, 3, 4, 2, 0),
    ]
    for name, batch, tq, t, d, heads, causal in cases:
        q, k, v = leaf(batch, tq, d), leaf(batch, t, d), leaf(batch, t, d)
        w.add(name + ".heads", heads)
        w.add(name + ".causal", causal)
        op_case(w, name, {"q": q, "k": k, "v": v}, attention_reference(q, k, v, heads, causal))

    x = leaf(2, 3, 6, scale=2.0) + 0.5
    x = x.detach().requires_grad_(True)
    gamma = (1.0 + 0.3 * torch.randn(6)).requires_grad_(True)
    beta = leaf(6, scale=0.5)
    w.add("layernorm.eps", 1e-5)
    op_case(w, "layernorm", {"x": x, "gamma": gamma, "beta": beta}, F.layer_norm(x, (6,), gamma, beta, 1e-5))
    x, gamma, beta = leaf(1, 9), (1.0 + 0.3 * torch.randn(9)).requires_grad_(True), leaf(9)
    w.add("layernorm_row.eps", 1e-3)
    op_case(w, "layernorm_row", {"x": x, "gamma": gamma, "beta": beta}, F.layer_norm(x, (9,), gamma, beta, 1e-3))

    for name, n, c in [("cross_entropy", 6, 7), ("cross_entropy_row", 1, 9)]:
        logits = leaf(n, c, scale=2.0)
        labels = torch.randint(0, c, (n,))
        loss = F.cross_entropy(logits, labels)
        w.add(name + ".logits", logits)
        w.add(name + ".labels", labels)
        w.add(name + ".out", loss)
        w.add(name + ".grad.logits", torch.autograd.grad(loss, logits)[0])

    pred, target = leaf(4, 3), torch.randn(4, 3)
    loss = F.mse_loss(pred, target)
    w.add("mse.pred", pred)
    w.add("mse.target", target)
    w.add("mse.out", loss)
    w.add("mse.grad.pred", torch.autograd.grad(loss, pred)[0])

    w.write()


def sinusoid_table(max_seq, d):
    """Return the table pe[t, 2i] = sin(t w_i), pe[t, 2i + 1] = cos(t w_i), w_i = exp(2i (-ln 10000 / d))."""
    pe = torch.zeros(max_seq, d)
    position = torch.arange(max_seq, dtype=torch.float32)[:, None]
    omega = torch.exp(torch.arange(0, d, 2, dtype=torch.float32) * (-math.log(10000.0) / d))
    pe[:, 0::2] = torch.sin(position * omega)
    pe[:, 1::2] = torch.cos(position * omega)
    return pe


class ReferenceTransformer(nn.Module):
    """The model that models/transformer.c implements, built from PyTorch's own
    layers: embedding * sqrt(D) + positions, nn.TransformerEncoder of pre-LN
    nn.TransformerEncoderLayer with a causal mask and no dropout (LayerNorms
    replaced by identity when layernorm is off), and a linear decoder read at
    the last position."""

    def __init__(self, vocab, max_seq, d_model, n_heads, d_mlp, n_layers, layernorm, learned_pos, gelu):
        super().__init__()
        self.d_model = d_model
        self.embed = nn.Embedding(vocab, d_model)
        self.learned_pos = learned_pos
        if learned_pos:
            self.pos = nn.Embedding(max_seq, d_model)
        else:
            self.register_buffer("sinusoid", sinusoid_table(max_seq, d_model))
        layer = nn.TransformerEncoderLayer(
            d_model, n_heads, d_mlp, dropout=0.0, activation="gelu" if gelu else "relu",
            batch_first=True, norm_first=True)
        self.encoder = nn.TransformerEncoder(layer, n_layers, enable_nested_tensor=False)
        if not layernorm:
            for block in self.encoder.layers:
                block.norm1 = nn.Identity()
                block.norm2 = nn.Identity()
        self.unembed = nn.Linear(d_model, vocab)

    def forward(self, tokens):
        seq = tokens.shape[1]
        pos = self.pos.weight[:seq] if self.learned_pos else self.sinusoid[:seq]
        x = self.embed(tokens) * math.sqrt(self.d_model) + pos
        mask = torch.triu(torch.full((seq, seq), float("-inf")), diagonal=1)
        x = self.encoder(x, mask=mask)
        return self.unembed(x[:, -1])

    def c_named_tensors(self, use_grad):
        """(C parameter name, tensor) pairs, splitting PyTorch's packed
        in_proj into Wq, Wk, Wv; use_grad selects the gradients instead."""
        def pick(p):
            return p.grad if use_grad else p.detach()

        d = self.d_model
        out = [("embed.weight", pick(self.embed.weight))]
        if self.learned_pos:
            out.append(("pos.weight", pick(self.pos.weight)))
        for i, block in enumerate(self.encoder.layers):
            prefix = "blocks.%d." % i
            if isinstance(block.norm1, nn.LayerNorm):
                out += [
                    (prefix + "ln1.weight", pick(block.norm1.weight)),
                    (prefix + "ln1.bias", pick(block.norm1.bias)),
                    (prefix + "ln2.weight", pick(block.norm2.weight)),
                    (prefix + "ln2.bias", pick(block.norm2.bias)),
                ]
            attn = block.self_attn
            in_w, in_b = pick(attn.in_proj_weight), pick(attn.in_proj_bias)
            for j, proj in enumerate(["wq", "wk", "wv"]):
                out.append((prefix + "attn.%s.weight" % proj, in_w[j * d:(j + 1) * d]))
                out.append((prefix + "attn.%s.bias" % proj, in_b[j * d:(j + 1) * d]))
            out += [
                (prefix + "attn.wo.weight", pick(attn.out_proj.weight)),
                (prefix + "attn.wo.bias", pick(attn.out_proj.bias)),
                (prefix + "mlp.w1.weight", pick(block.linear1.weight)),
                (prefix + "mlp.w1.bias", pick(block.linear1.bias)),
                (prefix + "mlp.w2.weight", pick(block.linear2.weight)),
                (prefix + "mlp.w2.bias", pick(block.linear2.bias)),
            ]
        out += [("unembed.weight", pick(self.unembed.weight)), ("unembed.bias", pick(self.unembed.bias))]
        return out


def randomize_parameters(model):
    """Replace PyTorch's initialisation, which zeroes the attention biases and
    sets LayerNorm to identity, so that every parameter affects the output."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("norm1.weight") or name.endswith("norm2.weight"):
                p.copy_(1.0 + 0.2 * torch.randn_like(p))
            elif p.dim() == 1:
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(torch.randn_like(p) / math.sqrt(p.shape[1]))


TRANSFORMER_CONFIGS = {
    # name: vocab, max_seq, d_model, n_heads, d_mlp, n_layers, layernorm, learned_pos, gelu
    "tf1": (11, 3, 16, 4, 24, 1, 0, 0, 0),
    "tf2": (11, 4, 16, 4, 24, 2, 1, 0, 1),
    "tf3": (7, 3, 8, 2, 12, 1, 1, 1, 0),
}


def write_config(w, name, config):
    keys = ["vocab", "max_seq", "d_model", "n_heads", "d_mlp", "n_layers", "layernorm", "learned_pos", "gelu"]
    for key, value in zip(keys, config):
        w.add("%s.config.%s" % (name, key), value)


def write_transformer_case(w, name, model, tokens, labels):
    """Write the logits, the cross-entropy loss at the last position and every parameter gradient."""
    model.zero_grad()
    logits = model(tokens)
    loss = F.cross_entropy(logits, labels)
    loss.backward()
    w.add(name + ".tokens", tokens)
    w.add(name + ".labels", labels)
    w.add(name + ".logits", logits)
    w.add(name + ".loss", loss)
    for pname, g in model.c_named_tensors(use_grad=True):
        w.add("%s.grad.%s" % (name, pname), g)


def write_model():
    torch.manual_seed(2)
    w = GoldenWriter("model.txt", "Golden values for models/transformer.c and models/mlp.c.")

    for name, config in TRANSFORMER_CONFIGS.items():
        vocab, max_seq = config[0], config[1]
        model = ReferenceTransformer(*config)
        randomize_parameters(model)
        write_config(w, name, config)
        for pname, p in model.c_named_tensors(use_grad=False):
            w.add("%s.param.%s" % (name, pname), p)
        seq = 3
        # transformer_forward_last switches to its (token, position) table
        # when batch * seq > vocab * max_seq, so "small" stays below that
        # and "table" goes above it.
        small_batch = 4 if name != "tf3" else 1
        table_batch = vocab * max_seq // seq + 5
        assert small_batch * seq <= vocab * max_seq < table_batch * seq
        for path, batch in [("small", small_batch), ("table", table_batch)]:
            tokens = torch.randint(0, vocab, (batch, seq))
            labels = torch.randint(0, vocab, (batch,))
            write_transformer_case(w, "%s.%s" % (name, path), model, tokens, labels)

    layers = [10, 7, 7, 7, 5]
    mlp = nn.Sequential()
    for i in range(len(layers) - 1):
        mlp.append(nn.Linear(layers[i], layers[i + 1]))
        if i < len(layers) - 2:
            mlp.append(nn.ReLU())
    linears = [m for m in mlp if isinstance(m, nn.Linear)]
    with torch.no_grad():
        for lin in linears:
            lin.bias.copy_(0.1 * torch.randn_like(lin.bias))
    x = torch.randn(6, 10)
    labels = torch.randint(0, 5, (6,))
    target = F.one_hot(labels, 5).to(torch.float32)
    out = mlp(x)
    loss = F.mse_loss(out, target)
    loss.backward()
    w.add("mlp.config.in", 10)
    w.add("mlp.config.hidden", 7)
    w.add("mlp.config.depth", 3)
    w.add("mlp.config.out", 5)
    w.add("mlp.x", x)
    w.add("mlp.target", target)
    for i, lin in enumerate(linears):
        w.add("mlp.param.layers.%d.weight" % i, lin.weight)
        w.add("mlp.param.layers.%d.bias" % i, lin.bias)
    w.add("mlp.out", out)
    w.add("mlp.loss", loss)
    for i, lin in enumerate(linears):
        w.add("mlp.grad.layers.%d.weight" % i, lin.weight.grad)
        w.add("mlp.grad.layers.%d.bias" % i, lin.bias.grad)

    w.write()


OPTIMIZER_STEPS = 3


def write_optim():
    """Each case starts from the same matrix "w" [3, 4] and vector "b" [4] and
    takes OPTIMIZER_STEPS steps with the gradients step<k>.grad.{w,b}."""
    torch.manual_seed(3)
    w = GoldenWriter("optim.txt", "Golden values for core/optim.c: parameters after each step, clipping.")
    init = {"w": torch.randn(3, 4), "b": torch.randn(4)}
    grads = [{"w": torch.randn(3, 4), "b": torch.randn(4)} for _ in range(OPTIMIZER_STEPS)]
    w.add("steps", OPTIMIZER_STEPS)
    for name in ["w", "b"]:
        w.add("init." + name, init[name])
    for k, g in enumerate(grads):
        for name in ["w", "b"]:
            w.add("step%d.grad.%s" % (k, name), g[name])

    def sgd(params, **kw):
        return torch.optim.SGD(params, lr=0.1, **kw)

    def adam(params):
        return torch.optim.Adam(params, lr=1e-2, betas=(0.9, 0.98), eps=1e-8, weight_decay=0.1)

    def adamw(params):
        return torch.optim.AdamW(params, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)

    def adamw_matrices(params):
        groups = [{"params": [params[0]]}, {"params": [params[1]], "weight_decay": 0.0}]
        return torch.optim.AdamW(groups, lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)

    cases = {
        "sgd_momentum": lambda p: sgd(p, momentum=0.9, weight_decay=1e-2),
        "sgd_nesterov": lambda p: sgd(p, momentum=0.9, weight_decay=1e-2, nesterov=True),
        "sgd_plain": lambda p: sgd(p),
        "adam": adam,
        "adamw": adamw,
        "adamw_matrices": adamw_matrices,
    }
    for case, make in cases.items():
        params = [init["w"].clone().requires_grad_(True), init["b"].clone().requires_grad_(True)]
        opt = make(params)
        for k, g in enumerate(grads):
            params[0].grad = g["w"].clone()
            params[1].grad = g["b"].clone()
            opt.step()
            w.add("%s.step%d.w" % (case, k), params[0])
            w.add("%s.step%d.b" % (case, k), params[1])

    # Clipping: the gradients of step 0, once with max_norm below their norm
    # (they are scaled) and once above it (they are left alone).
    norm = torch.sqrt((grads[0]["w"] ** 2).sum() + (grads[0]["b"] ** 2).sum()).item()
    for case, max_norm in [("clip", 0.5 * norm), ("clip_noop", 2.0 * norm)]:
        params = [init["w"].clone().requires_grad_(True), init["b"].clone().requires_grad_(True)]
        params[0].grad = grads[0]["w"].clone()
        params[1].grad = grads[0]["b"].clone()
        total = torch.nn.utils.clip_grad_norm_(params, max_norm)
        w.add(case + ".max_norm", max_norm)
        w.add(case + ".norm", total)
        w.add(case + ".grad.w", params[0].grad)
        w.add(case + ".grad.b", params[1].grad)

    w.write()


TRAIN_STEPS = 5


def write_train():
    """Write the losses and final parameters of full-batch AdamW on the tf1 Transformer, as the grokking runs train it."""
    torch.manual_seed(4)
    w = GoldenWriter("train.txt", "Golden values for %d full-batch AdamW steps of a small Transformer." % TRAIN_STEPS)
    config = TRANSFORMER_CONFIGS["tf1"]
    vocab, max_seq = config[0], config[1]
    model = ReferenceTransformer(*config)
    randomize_parameters(model)
    write_config(w, "train", config)
    for pname, p in model.c_named_tensors(use_grad=False):
        w.add("train.init." + pname, p)

    # 40 sequences of 3 tokens: above vocab * max_seq = 33, so the C model
    # takes its table path, as it does in the grokking runs.
    tokens = torch.randint(0, vocab, (40, max_seq))
    labels = (tokens[:, 0] + tokens[:, 1]) % vocab

    w.add("train.tokens", tokens)
    w.add("train.labels", labels)
    w.add("train.lr", 1e-3)
    w.add("train.beta1", 0.9)
    w.add("train.beta2", 0.98)
    w.add("train.eps", 1e-8)
    w.add("train.weight_decay", 1.0)

    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, betas=(0.9, 0.98), eps=1e-8, weight_decay=1.0)
    losses = []
    for _ in range(TRAIN_STEPS):
        opt.zero_grad()
        loss = F.cross_entropy(model(tokens), labels)
        loss.backward()
        opt.step()
        losses.append(loss.item())

    w.add("train.losses", torch.tensor(losses))
    for pname, p in model.c_named_tensors(use_grad=False):
        w.add("train.final." + pname, p)
    w.write()


def main():
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    write_ops()
    write_model()
    write_optim()
    write_train()


if __name__ == "__main__":
    main()
