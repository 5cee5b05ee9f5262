/* Differentiable ops. Each returns a new tensor in g's arena and, when g is
 * recording and an input carries a gradient, records itself on the tape.
 * Shapes are checked on every call; a mismatch aborts naming the op and the
 * shapes.
 *
 * Dimension letters: R rows (any leading dimensions flattened), B batch,
 * T sequence length, D model width, V vocabulary, C classes. Weights are
 * stored (out, in), as in PyTorch, so a linear layer computes x Wᵀ + b.
 * Image ops use NCHW: N batch, C channels, H height, W width; O output
 * channels, KH × KW kernel, OH × OW output size. */
#ifndef SD_OPS_H
#define SD_OPS_H

#include "graph.h"

/* y[.., out] = x[.., in] Wᵀ + b; W [out, in], b [out] or NULL. */
Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b);
/* y[R, out] = b + Σ_f W[:, ids[r, f]]: op_linear on a multi-hot input given
 * by the column index of each one, ids [R, F] with entries in [0, in). ids is
 * copied, so the caller's array may change afterwards. */
Tensor *op_linear_onehot(Graph *g, const int *ids, int rows, int fields, Tensor *w, Tensor *b);
/* y[M, N] = a[M, K] b[K, N]. */
Tensor *op_matmul(Graph *g, Tensor *a, Tensor *b);
/* y = a + b, same shapes. */
Tensor *op_add(Graph *g, Tensor *a, Tensor *b);
/* y[R, C] = x[R, C] + b[C]. */
Tensor *op_add_bias(Graph *g, Tensor *x, Tensor *b);
/* y = a ⊙ b, same shapes. */
Tensor *op_mul(Graph *g, Tensor *a, Tensor *b);
/* y = s x. */
Tensor *op_scale(Graph *g, Tensor *x, float s);
/* y = max(x, 0). */
Tensor *op_relu(Graph *g, Tensor *x);
/* y = x Φ(x) with the exact normal CDF (PyTorch's default GELU). */
Tensor *op_gelu(Graph *g, Tensor *x);
/* y[B, T, D] = scale · table[ids[b, t]]; ids has B·T entries in [0, V) and
 * is copied, so the caller's array may change afterwards. */
Tensor *op_embedding(Graph *g, Tensor *table, const int *ids, int batch, int seq, float scale);
/* y[B, T, D] = x[B, T, D] + pos[t] for the first T rows of pos[Tmax, D].
 * pos may be a constant table (no gradient) or a learned parameter. */
Tensor *op_add_position(Graph *g, Tensor *x, Tensor *pos);
/* y[B, n, D] = the last n positions of x[B, T, D]. */
Tensor *op_take_last(Graph *g, Tensor *x, int n);
/* Multi-head scaled dot-product attention. q[B, Tq, D] contains the queries of
 * the last Tq of the T positions of k, v [B, T, D]; heads split D into
 * equal slices. With causal set, the query at position i attends to
 * positions <= i. Returns [B, Tq, D] (heads concatenated, before Wo). */
Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int heads, int causal);
/* Layer normalisation over the last dimension with biased variance:
 * y = (x − mean) / sqrt(var + eps) ⊙ gamma + beta; gamma, beta [C]. */
Tensor *op_layernorm(Graph *g, Tensor *x, Tensor *gamma, Tensor *beta, float eps);
/* Mean softmax cross-entropy of logits[N, C] against labels[N] in [0, C);
 * returns a one-element tensor. labels is copied. */
Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *labels);
/* Mean squared error over all elements of pred and target (same shapes);
 * target receives no gradient. Returns a one-element tensor. */
Tensor *op_mse(Graph *g, Tensor *pred, Tensor *target);

/* 2-D convolution (cross-correlation, as nn.Conv2d): x [N, C, H, W],
 * w [O, C, KH, KW], b [O] or NULL, zero padding on every side; returns
 * [N, O, OH, OW] with OH = (H + 2 padding − KH) / stride + 1 (floor). */
Tensor *op_conv2d(Graph *g, Tensor *x, Tensor *w, Tensor *b, int stride, int padding);
/* Select conv2d's implementation: on = 1 runs the im2col-GEMM reference
 * path, on = 0 (the default) oneDNN. Shapes that oneDNN does not implement
 * take the reference path either way. Without a call, setting the
 * environment variable SPECDYN_CONV_REFERENCE to anything but "" or "0"
 * selects the reference path. */
void conv2d_use_reference(int on);
/* Max pooling of x [N, C, H, W] over kernel × kernel windows (padding with
 * −inf, floor mode); the first maximum in a window takes the gradient. */
Tensor *op_max_pool2d(Graph *g, Tensor *x, int kernel, int stride, int padding);
/* Select max_pool2d's implementation: on = 1 runs the general window loop
 * for every shape, on = 0 (the default) a loop without bounds checks for
 * 2 × 2 windows with stride 2 and no padding. Without a call, setting the
 * environment variable SPECDYN_POOL_REFERENCE to anything but "" or "0"
 * selects the general loop. */
void max_pool2d_use_reference(int on);
/* Average pooling (floor mode, zero padding counted in the divisor kernel²,
 * as nn.AvgPool2d's default count_include_pad = True). */
Tensor *op_avg_pool2d(Graph *g, Tensor *x, int kernel, int stride, int padding);
/* y[N, C] = mean over H, W of x[N, C, H, W]. */
Tensor *op_global_avg_pool(Graph *g, Tensor *x);
/* Batch normalisation of x [N, C] or [N, C, H, W] per channel C:
 * y = (x − mean) / sqrt(var + eps) ⊙ gamma + beta; gamma, beta [C].
 * With g->training set, mean and the biased var come from the batch, and
 * running_mean, running_var [C] (store buffers, or NULL to leave none) move
 * as running = (1 − momentum) running + momentum · batch statistic, the
 * variance unbiased there (nn.BatchNorm semantics). With training off the
 * running statistics normalise and stay unchanged. */
Tensor *op_batchnorm(Graph *g, Tensor *x, Tensor *gamma, Tensor *beta, Tensor *running_mean,
                     Tensor *running_var, float momentum, float eps);
/* Inverted dropout: with g->training set each element is zeroed with
 * probability p (drawn from g->rng) and the rest scaled by 1 / (1 − p);
 * otherwise, or with p = 0, returns x itself. */
Tensor *op_dropout(Graph *g, Tensor *x, float p);

#endif
