/* Batch normalisation and dropout: the ops whose forward depends on
 * g->training.
 *
 * Dimension letters: N batch, C channels, S = H·W positions per channel
 * (S = 1 for [N, C] inputs), M = N·S elements per channel. */
#include <math.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* ---- batchnorm: y = (x − mean) / sqrt(var + eps) ⊙ gamma + beta ----------- */

/* Per-channel statistics saved for backward. */
typedef struct {
    float *mean;     /* [C] mean used to normalise (batch or running) */
    float *invstd;   /* [C] 1 / sqrt(var + eps) */
} NormStats;

Tensor *op_batchnorm(Graph *g, Tensor *x, Tensor *gamma, Tensor *beta, Tensor *running_mean,
                     Tensor *running_var, float momentum, float eps) {
    SHAPE_CHECK(x->ndim == 2 || x->ndim == 4, "batchnorm", x, gamma, beta);
    int n = x->shape[0], c = x->shape[1];
    long s = x->ndim == 4 ? (long)x->shape[2] * x->shape[3] : 1;
    long m = n * s;
    SHAPE_CHECK(gamma->size == c && beta->size == c, "batchnorm", x, gamma, beta);
    SHAPE_CHECK((!running_mean || running_mean->size == c) && (!running_var || running_var->size == c), "batchnorm",
                x, running_mean, running_var);
    /* The unbiased variance needs two values per channel; PyTorch rejects this case too. */
    SHAPE_CHECK(!g->training || m > 1, "batchnorm", x, gamma, beta);
    SHAPE_CHECK(g->training || (running_mean && running_var), "batchnorm", x, running_mean, running_var);
    int needs = graph_needs_grad(g, x, gamma, beta);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    if (g->bn_average_count > 0) momentum = 1.0f / (float)g->bn_average_count;
    float *mean = arena_alloc(&g->arena, (size_t)c * sizeof(float));
    float *invstd = arena_alloc(&g->arena, (size_t)c * sizeof(float));
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (int ch = 0; ch < c; ch++) {
        if (g->training) {
            /* Two passes in double: the one-pass E[x²] − E[x]² cancels badly when |mean| ≫ std. */
            double sum = 0.0;
            for (int b = 0; b < n; b++)
                for (long i = 0; i < s; i++) sum += (double)x->data[((long)b * c + ch) * s + i];
            double mu = sum / (double)m, sq = 0.0;
            for (int b = 0; b < n; b++)
                for (long i = 0; i < s; i++) {
                    double d = (double)x->data[((long)b * c + ch) * s + i] - mu;
                    sq += d * d;
                }
            double var = sq / (double)m;
            mean[ch] = (float)mu;
            invstd[ch] = (float)(1.0 / sqrt(var + (double)eps));
            if (running_mean)
                running_mean->data[ch] = (1.0f - momentum) * running_mean->data[ch] + momentum * (float)mu;
            if (running_var)
                running_var->data[ch] =
                    (1.0f - momentum) * running_var->data[ch] + momentum * (float)(sq / (double)(m - 1));
        } else {
            mean[ch] = running_mean->data[ch];
            invstd[ch] = 1.0f / sqrtf(running_var->data[ch] + eps);
        }
        float scale = gamma->data[ch] * invstd[ch], shift = beta->data[ch] - mean[ch] * scale;
        for (int b = 0; b < n; b++)
            for (long i = 0; i < s; i++) {
                long at = ((long)b * c + ch) * s + i;
                y->data[at] = x->data[at] * scale + shift;
            }
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_BATCHNORM, y);
        e->in[0] = x;
        e->in[1] = gamma;
        e->in[2] = beta;
        e->iarg[0] = g->training;
        NormStats *st = arena_alloc(&g->arena, sizeof *st);
        st->mean = mean;
        st->invstd = invstd;
        e->saved = st;
    }
    return y;
}

/* Differentiates y = x̂ ⊙ gamma + beta with x̂ = (x − mean) · invstd:
 * dgamma += Σ dy x̂, dbeta += Σ dy (sums over N and S per channel). With batch
 * statistics mean and invstd depend on x, so
 * dx += gamma · invstd / M · (M dy − Σ dy − x̂ Σ dy x̂); with running
 * statistics dx += gamma · invstd · dy. */
void batchnorm_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *gamma = e->in[1], *beta = e->in[2], *y = e->out;
    const NormStats *st = e->saved;
    int training = e->iarg[0];
    int n = x->shape[0], c = x->shape[1];
    long s = x->ndim == 4 ? (long)x->shape[2] * x->shape[3] : 1;
    long m = n * s;
    int x_store = x->grad ? tensor_grad_claim(x) : 0;
    int gamma_store = gamma->grad ? tensor_grad_claim(gamma) : 0;
    int beta_store = beta->grad ? tensor_grad_claim(beta) : 0;
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (int ch = 0; ch < c; ch++) {
        float mu = st->mean[ch], inv = st->invstd[ch];
        double sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int b = 0; b < n; b++)
            for (long i = 0; i < s; i++) {
                long at = ((long)b * c + ch) * s + i;
                sum_dy += (double)y->grad[at];
                sum_dy_xhat += (double)y->grad[at] * (double)((x->data[at] - mu) * inv);
            }
        if (gamma->grad) GRAD_PUT(gamma_store, gamma->grad, ch, (float)sum_dy_xhat);
        if (beta->grad) GRAD_PUT(beta_store, beta->grad, ch, (float)sum_dy);
        if (!x->grad) continue;
        float k = gamma->data[ch] * inv;
        float mean_dy = (float)(sum_dy / (double)m), mean_dy_xhat = (float)(sum_dy_xhat / (double)m);
        for (int b = 0; b < n; b++)
            for (long i = 0; i < s; i++) {
                long at = ((long)b * c + ch) * s + i;
                float d = y->grad[at];
                if (training) d = d - mean_dy - (x->data[at] - mu) * inv * mean_dy_xhat;
                GRAD_PUT(x_store, x->grad, at, k * d);
            }
    }
}

/* ---- dropout: y = x ⊙ mask / (1 − p) --------------------------------------- */

Tensor *op_dropout(Graph *g, Tensor *x, float p) {
    SHAPE_CHECK(p >= 0.0f && p <= 1.0f, "dropout", x, NULL, NULL);
    if (!g->training || p == 0.0f) return x;
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    /* scale[i] = 0 for a dropped element, 1 / (1 − p) for a kept one; p = 1 drops all, as in PyTorch. */
    float *scale = arena_alloc(&g->arena, (size_t)x->size * sizeof(float));
    float keep = p < 1.0f ? 1.0f / (1.0f - p) : 0.0f;
    /* Serial: the draws must come in a fixed order for the run to replay. */
    for (long i = 0; i < x->size; i++) scale[i] = rng_uniform(&g->rng) < p ? 0.0f : keep;
    for (long i = 0; i < x->size; i++) y->data[i] = x->data[i] * scale[i];
    if (needs) {
        TapeEntry *e = graph_record(g, OP_DROPOUT, y);
        e->in[0] = x;
        e->saved = scale;
    }
    return y;
}

/* Differentiates y = x ⊙ scale: dx += dy ⊙ scale. */
void dropout_backward(TapeEntry *e) {
    Tensor *x = e->in[0];
    const float *scale = e->saved;
    int store = tensor_grad_claim(x);
    for (long i = 0; i < x->size; i++) GRAD_PUT(store, x->grad, i, e->out->grad[i] * scale[i]);
}
