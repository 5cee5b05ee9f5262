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

/* Channel sums run in double, in LANES independent partial sums that the
 * compiler turns into vector adds. A single running sum would be a serial
 * chain of adds, which the compiler cannot vectorise without reassociation.
 * The lanes are combined in a fixed order, so the result does not depend
 * on the thread count. */
#define LANES 16

/* Σ x[i] over a row of n elements, added to *total. */
static void add_row_sum(const float *restrict x, long n, double *total) {
    double acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (double)x[i + j];
    for (; i < n; i++) acc[i % LANES] += (double)x[i];
    for (int j = 0; j < LANES; j++) *total += acc[j];
}

/* Σ (x[i] − mu)² over a row, added to *total. */
static void add_row_squared_deviation(const float *restrict x, long n, double mu, double *total) {
    double acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) {
            double d = (double)x[i + j] - mu;
            acc[j] += d * d;
        }
    for (; i < n; i++) {
        double d = (double)x[i] - mu;
        acc[i % LANES] += d * d;
    }
    for (int j = 0; j < LANES; j++) *total += acc[j];
}

/* Σ dy · x̂ over a row, x̂ = (x − mu) · inv in float, added to *total. */
static void add_row_dot_xhat(const float *restrict dy, const float *restrict x, long n, float mu, float inv,
                             double *total) {
    double acc[LANES] = {0};
    long i = 0;
    for (; i + LANES <= n; i += LANES)
        for (int j = 0; j < LANES; j++) acc[j] += (double)dy[i + j] * (double)((x[i + j] - mu) * inv);
    for (; i < n; i++) acc[i % LANES] += (double)dy[i] * (double)((x[i] - mu) * inv);
    for (int j = 0; j < LANES; j++) *total += acc[j];
}

/* y = x · scale + shift over a row. */
static void scale_row(const float *restrict x, long n, float scale, float shift, float *restrict y) {
    for (long i = 0; i < n; i++) y[i] = x[i] * scale + shift;
}

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
            for (int b = 0; b < n; b++) add_row_sum(x->data + ((long)b * c + ch) * s, s, &sum);
            double mu = sum / (double)m, sq = 0.0;
            for (int b = 0; b < n; b++) add_row_squared_deviation(x->data + ((long)b * c + ch) * s, s, mu, &sq);
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
        for (int b = 0; b < n; b++) {
            long row = ((long)b * c + ch) * s;
            scale_row(x->data + row, s, scale, shift, y->data + row);
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

/* The per-channel constants of dx. */
typedef struct {
    float mu, inv;           /* mean and 1 / std used in the forward */
    float k;                 /* gamma · inv */
    float mean_dy, mean_dy_xhat;
    int training;            /* 1: batch statistics, so the means enter dx */
} RowGrad;

/* dx = k · (dy − mean_dy − x̂ · mean_dy_xhat) with batch statistics, k · dy
 * otherwise; stored when store is set, added otherwise. */
static void put_row_input_grad(const float *restrict dy, const float *restrict x, long n, const RowGrad *r, int store,
                               float *restrict dx) {
    float mu = r->mu, inv = r->inv, k = r->k, mean_dy = r->mean_dy, mean_dy_xhat = r->mean_dy_xhat;
    if (r->training && store)
        for (long i = 0; i < n; i++) dx[i] = k * (dy[i] - mean_dy - (x[i] - mu) * inv * mean_dy_xhat);
    else if (r->training)
        for (long i = 0; i < n; i++) dx[i] += k * (dy[i] - mean_dy - (x[i] - mu) * inv * mean_dy_xhat);
    else if (store)
        for (long i = 0; i < n; i++) dx[i] = k * dy[i];
    else
        for (long i = 0; i < n; i++) dx[i] += k * dy[i];
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
        for (int b = 0; b < n; b++) {
            long row = ((long)b * c + ch) * s;
            add_row_sum(y->grad + row, s, &sum_dy);
            add_row_dot_xhat(y->grad + row, x->data + row, s, mu, inv, &sum_dy_xhat);
        }
        if (gamma->grad) GRAD_PUT(gamma_store, gamma->grad, ch, (float)sum_dy_xhat);
        if (beta->grad) GRAD_PUT(beta_store, beta->grad, ch, (float)sum_dy);
        if (!x->grad) continue;
        float k = gamma->data[ch] * inv;
        float mean_dy = (float)(sum_dy / (double)m), mean_dy_xhat = (float)(sum_dy_xhat / (double)m);
        for (int b = 0; b < n; b++) {
            long row = ((long)b * c + ch) * s;
            put_row_input_grad(y->grad + row, x->data + row, s, &(RowGrad){mu, inv, k, mean_dy, mean_dy_xhat, training},
                               x_store, x->grad + row);
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
