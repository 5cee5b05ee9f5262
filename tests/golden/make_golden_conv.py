"""Write the golden values that tests/test_golden_conv.c checks the image ops against.

Run from the repository root with Debian's interpreter, which has PyTorch:

    /usr/bin/python3 tests/golden/make_golden_conv.py

It writes tests/golden/conv.txt in the format of make_golden.py (see its
docstring): for an op with output y and the fixed random R written as
"<case>.r", the gradient of sum(y * R) with respect to input
"<case>.<input>" is "<case>.grad.<input>". Integer settings (stride,
padding, kernel) are scalars "<case>.stride" and so on. Batch-norm cases
also write the running statistics before ("<case>.running_mean") and after
("<case>.new_running_mean") the forward pass.
"""

import torch
import torch.nn.functional as F

from make_golden import GoldenWriter, leaf, op_case

BN_MOMENTUM = 0.1
BN_EPS = 1e-5


def conv_case(w, name, x_shape, w_shape, stride, padding, bias=True):
    x, wt = leaf(*x_shape), leaf(*w_shape)
    inputs = {"x": x, "w": wt}
    b = None
    if bias:
        b = leaf(w_shape[0])
        inputs["b"] = b
    w.add(name + ".stride", stride)
    w.add(name + ".padding", padding)
    op_case(w, name, inputs, F.conv2d(x, wt, b, stride=stride, padding=padding))


def pool_case(w, name, fn, x_shape, kernel, stride, padding):
    x = leaf(*x_shape)
    for key, value in (("kernel", kernel), ("stride", stride), ("padding", padding)):
        w.add("%s.%s" % (name, key), value)
    op_case(w, name, {"x": x}, fn(x, kernel, stride, padding))


def running_stats(w, name, channels):
    """Write and return running statistics away from their defaults (mean 0, variance 1)."""
    mean = torch.randn(channels) * 0.5
    var = torch.rand(channels) + 0.5
    w.add(name + ".running_mean", mean)
    w.add(name + ".running_var", var)
    return mean.clone(), var.clone()


def batchnorm_case(w, name, x_shape, training):
    channels = x_shape[1]
    x = leaf(*x_shape, scale=2.0)
    gamma, beta = leaf(channels), leaf(channels)
    mean, var = running_stats(w, name, channels)
    y = F.batch_norm(x, mean, var, gamma, beta, training=training, momentum=BN_MOMENTUM, eps=BN_EPS)
    op_case(w, name, {"x": x, "gamma": gamma, "beta": beta}, y)
    w.add(name + ".new_running_mean", mean)
    w.add(name + ".new_running_var", var)


def vgg_block(w):
    """conv 3x3 pad 1 -> batch norm (training) -> ReLU -> 2x2 max pool, as one VGG stage."""
    name = "vgg_block"
    x, wt, b = leaf(2, 3, 8, 6), leaf(5, 3, 3, 3, scale=0.5), leaf(5)
    gamma, beta = leaf(5), leaf(5)
    mean, var = running_stats(w, name, 5)
    h = F.conv2d(x, wt, b, padding=1)
    h = F.batch_norm(h, mean, var, gamma, beta, training=True, momentum=BN_MOMENTUM, eps=BN_EPS)
    y = F.max_pool2d(F.relu(h), 2, 2)
    op_case(w, name, {"x": x, "w": wt, "b": b, "gamma": gamma, "beta": beta}, y)
    w.add(name + ".new_running_mean", mean)
    w.add(name + ".new_running_var", var)


def main():
    torch.set_default_dtype(torch.float32)
    torch.set_num_threads(1)
    torch.manual_seed(7)
    w = GoldenWriter("conv.txt", "Golden values for the image ops of core/ops.h.")
    conv_case(w, "conv_s1p1", (2, 3, 5, 4), (4, 3, 3, 3), 1, 1)
    conv_case(w, "conv_s2p0", (2, 2, 7, 6), (3, 2, 3, 2), 2, 0)
    conv_case(w, "conv_s2p2_nobias", (1, 2, 5, 5), (2, 2, 3, 3), 2, 2, bias=False)
    conv_case(w, "conv_1x1", (3, 4, 3, 2), (5, 4, 1, 1), 1, 0)
    pool_case(w, "max_pool_k2s2", F.max_pool2d, (2, 3, 4, 6), 2, 2, 0)
    pool_case(w, "max_pool_k3s2p1", F.max_pool2d, (1, 2, 5, 4), 3, 2, 1)
    pool_case(w, "avg_pool_k2s2", F.avg_pool2d, (2, 2, 4, 5), 2, 2, 0)
    pool_case(w, "avg_pool_k3s2p1", F.avg_pool2d, (1, 3, 5, 6), 3, 2, 1)
    x = leaf(3, 2, 3, 5)
    op_case(w, "global_avg_pool", {"x": x}, F.adaptive_avg_pool2d(x, 1).flatten(1))
    batchnorm_case(w, "bn_train_4d", (3, 2, 3, 4), True)
    batchnorm_case(w, "bn_train_2d", (5, 3), True)
    batchnorm_case(w, "bn_eval_4d", (2, 3, 2, 2), False)
    batchnorm_case(w, "bn_eval_2d", (4, 2), False)
    vgg_block(w)
    w.write()


if __name__ == "__main__":
    main()
