/* Differentiable ops. Each returns a new tensor in g's arena and, when g is
 * recording and an input carries a gradient, records itself on the tape.
 * Shapes are checked on every call; a mismatch aborts naming the op and the
 * shapes.
 *
 * Dimension letters: R rows (any leading dimensions flattened), B batch,
 * T sequence length, D model width, V vocabulary, C classes. Weights are
 * stored (out, in), as in PyTorch, so a linear layer computes x Wᵀ + b. */
#ifndef SD_OPS_H
#define SD_OPS_H

#include "graph.h"

/* y[.., out] = x[.., in] Wᵀ + b; W [out, in], b [out] or NULL. */
Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b);
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
/* Multi-head scaled dot-product attention. q[B, Tq, D] holds the queries of
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

#endif
