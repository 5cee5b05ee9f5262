/* Parameter initialisations with PyTorch's default distributions, so a
 * config transcribed from a PyTorch experiment starts from the same
 * distribution (not the same numbers: the random stream differs). */
#ifndef SD_INIT_H
#define SD_INIT_H

#include "rng.h"
#include "tensor.h"

/* Every element uniform in [lo, hi). */
void init_uniform(Tensor *t, Rng *g, float lo, float hi);
/* Every element normal(mean, std). */
void init_normal(Tensor *t, Rng *g, float mean, float std);
void init_constant(Tensor *t, float value);
/* nn.Linear / nn.Conv default: kaiming_uniform(a = √5) on w, which is
 * U(±1/√fan_in), and b (if not NULL) U(±1/√fan_in); fan_in = size / shape[0]. */
void init_linear_default(Tensor *w, Tensor *b, Rng *g);
/* xavier_uniform over the matrix formed by stacking parts row-wise, as
 * nn.MultiheadAttention does for its packed (3D, D) in_proj_weight:
 * U(±√(6 / (fan_in + fan_out))) with fan_out = total rows. */
void init_xavier_uniform_stacked(Tensor *const *parts, int n_parts, Rng *g);

#endif
