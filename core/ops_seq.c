/* Sequence ops: embedding, positions, position selection, multi-head
 * attention and layer normalisation. Layout [B, T, D], row-major. */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* ---- embedding: y[b, t] = scale · table[ids[b, t]] ---------------------- */

Tensor *op_embedding(Graph *g, Tensor *table, const int *ids, int batch, int seq, float scale) {
    SHAPE_CHECK(table->ndim == 2, "embedding", table, NULL, NULL);
    int vocab = table->shape[0], d = table->shape[1];
    long n = (long)batch * seq;
    for (long i = 0; i < n; i++)
        CHECK(ids[i] >= 0 && ids[i] < vocab, "embedding: id %d at %ld outside [0, %d)", ids[i], i, vocab);
    int needs = graph_needs_grad(g, table, NULL, NULL);
    Tensor *y = op_output(g, 3, (int[]){batch, seq, d}, needs);
#pragma omp parallel for schedule(static) if (n * d > PARALLEL_MIN)
    for (long i = 0; i < n; i++) {
        const float *row = table->data + (long)ids[i] * d;
        for (int j = 0; j < d; j++) y->data[i * d + j] = scale * row[j];
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_EMBEDDING, y);
        e->in[0] = table;
        int *saved = arena_alloc(&g->arena, (size_t)n * sizeof(int));
        memcpy(saved, ids, (size_t)n * sizeof(int));
        e->saved = saved;
        e->iarg[0] = (int)n;
        e->farg[0] = scale;
    }
    return y;
}

/* Each thread owns a contiguous block of columns and walks i in order, so
 * the scatter needs no atomics and the sum order is fixed. */
void scatter_add_rows(float *table, const int *ids, long n, int group, const float *src, int d, float scale) {
    int threads = n * d > PARALLEL_MIN ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int c0 = (int)((long)d * t / nt), c1 = (int)((long)d * (t + 1) / nt);
        for (long i = 0; i < n; i++) {
            float *dst = table + (long)ids[i] * d;
            const float *row = src + i / group * d;
            for (int j = c0; j < c1; j++) dst[j] += scale * row[j];
        }
    }
}

/* Differentiates y[i] = scale · table[ids[i]]: table.grad[ids[i]] += scale dy[i]. */
void embedding_backward(TapeEntry *e) {
    Tensor *table = e->in[0];
    tensor_grad_claim_zeroed(table);
    scatter_add_rows(table->grad, e->saved, e->iarg[0], 1, e->out->grad, table->shape[1], e->farg[0]);
}

/* ---- add_position: y[b, t] = x[b, t] + pos[t] --------------------------- */

Tensor *op_add_position(Graph *g, Tensor *x, Tensor *pos) {
    SHAPE_CHECK(x->ndim == 3 && pos->ndim == 2 && pos->shape[1] == x->shape[2] && pos->shape[0] >= x->shape[1],
                "add_position", x, pos, NULL);
    int batch = x->shape[0], seq = x->shape[1], d = x->shape[2];
    int needs = graph_needs_grad(g, x, pos, NULL);
    Tensor *y = op_output(g, 3, x->shape, needs);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long bt = 0; bt < (long)batch * seq; bt++) {
        const float *p = pos->data + (bt % seq) * d;
        for (int j = 0; j < d; j++) y->data[bt * d + j] = x->data[bt * d + j] + p[j];
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_ADD_POSITION, y);
        e->in[0] = x;
        e->in[1] = pos;
    }
    return y;
}

/* Differentiates y[b, t] = x[b, t] + pos[t]: dx += dy, dpos[t] += Σ_b dy[b, t]. */
void add_position_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *pos = e->in[1];
    const float *dy = e->out->grad;
    int batch = x->shape[0], seq = x->shape[1], d = x->shape[2];
    if (x->grad) {
        int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
        for (long i = 0; i < x->size; i++) GRAD_PUT(store, x->grad, i, dy[i]);
    }
    if (pos->grad) {
        tensor_grad_claim_zeroed(pos);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
        for (long tj = 0; tj < (long)seq * d; tj++) {
            float s = 0.0f;
            for (int b = 0; b < batch; b++) s += dy[(long)b * seq * d + tj];
            pos->grad[tj] += s;
        }
    }
}

/* ---- take_last: y[b, i] = x[b, T − n + i] ------------------------------- */

Tensor *op_take_last(Graph *g, Tensor *x, int n) {
    SHAPE_CHECK(x->ndim == 3 && n >= 1 && n <= x->shape[1], "take_last", x, NULL, NULL);
    int batch = x->shape[0], seq = x->shape[1], d = x->shape[2];
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, 3, (int[]){batch, n, d}, needs);
    for (int b = 0; b < batch; b++)
        memcpy(y->data + (long)b * n * d, x->data + ((long)b * seq + seq - n) * d, (size_t)n * d * sizeof(float));
    if (needs) {
        TapeEntry *e = graph_record(g, OP_TAKE_LAST, y);
        e->in[0] = x;
        e->iarg[0] = n;
    }
    return y;
}

/* Differentiates the selection: dx[b, T − n + i] += dy[b, i]. */
void take_last_backward(TapeEntry *e) {
    Tensor *x = e->in[0];
    int n = e->iarg[0];
    int batch = x->shape[0], seq = x->shape[1], d = x->shape[2];
    const float *dy = e->out->grad;
    tensor_grad_claim_zeroed(x);
#pragma omp parallel for schedule(static) if ((long)batch * n * d > PARALLEL_MIN)
    for (int b = 0; b < batch; b++) {
        float *dx = x->grad + ((long)b * seq + seq - n) * d;
        const float *src = dy + (long)b * n * d;
        for (long j = 0; j < (long)n * d; j++) dx[j] += src[j];
    }
}

/* ---- attention ----------------------------------------------------------
 * Per batch b and head h (columns h·dh .. (h+1)·dh of D), for query i at
 * absolute position a = T − Tq + i:
 *   s_j = (q_i · k_j) / sqrt(dh)  for j <= a (causal) or all j,
 *   p = softmax(s),  out_i = Σ_j p_j v_j.
 * The probabilities p [B, H, Tq, T] are saved for the backward pass (zeros at
 * masked positions). */

Tensor *op_attention(Graph *g, Tensor *q, Tensor *k, Tensor *v, int heads, int causal) {
    SHAPE_CHECK(q->ndim == 3 && k->ndim == 3 && v->ndim == 3, "attention", q, k, v);
    int batch = k->shape[0], seq = k->shape[1], d = k->shape[2], tq = q->shape[1];
    SHAPE_CHECK(q->shape[0] == batch && v->shape[0] == batch && v->shape[1] == seq && q->shape[2] == d &&
                    v->shape[2] == d && tq <= seq,
                "attention", q, k, v);
    CHECK(heads >= 1 && d % heads == 0, "attention: D = %d not divisible by %d heads", d, heads);
    int dh = d / heads, offset = seq - tq;
    float scale = 1.0f / sqrtf((float)dh);
    int needs = graph_needs_grad(g, q, k, v);
    Tensor *y = op_output(g, 3, q->shape, needs);
    float *probs = arena_alloc(&g->arena, (size_t)batch * heads * tq * seq * sizeof(float));
#pragma omp parallel for schedule(static) if ((long)batch * tq * seq * d > PARALLEL_MIN / 4)
    for (int b = 0; b < batch; b++) {
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < tq; i++) {
                const float *qi = q->data + ((long)b * tq + i) * d + h * dh;
                float *p = probs + (((long)b * heads + h) * tq + i) * seq;
                int last = causal ? offset + i : seq - 1;
                float max = -INFINITY;
                for (int j = 0; j <= last; j++) {
                    const float *kj = k->data + ((long)b * seq + j) * d + h * dh;
                    float s = 0.0f;
                    for (int c = 0; c < dh; c++) s += qi[c] * kj[c];
                    p[j] = s * scale;
                    if (p[j] > max) max = p[j];
                }
                float sum = 0.0f;
                for (int j = 0; j <= last; j++) {
                    p[j] = expf(p[j] - max);
                    sum += p[j];
                }
                float inv = 1.0f / sum;
                for (int j = 0; j <= last; j++) p[j] *= inv;
                for (int j = last + 1; j < seq; j++) p[j] = 0.0f;
                float *yi = y->data + ((long)b * tq + i) * d + h * dh;
                for (int c = 0; c < dh; c++) yi[c] = 0.0f;
                for (int j = 0; j <= last; j++) {
                    const float *vj = v->data + ((long)b * seq + j) * d + h * dh;
                    for (int c = 0; c < dh; c++) yi[c] += p[j] * vj[c];
                }
            }
        }
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_ATTENTION, y);
        e->in[0] = q;
        e->in[1] = k;
        e->in[2] = v;
        e->iarg[0] = heads;
        e->iarg[1] = causal;
        e->saved = probs;
    }
    return y;
}

/* Differentiates out_i = Σ_j p_j v_j with p = softmax(q_i · k_j / sqrt(dh)):
 *   dv_j += p_j dout_i,  dp_j = dout_i · v_j,  ds_j = p_j (dp_j − Σ_l p_l dp_l),
 *   dq_i += Σ_j ds_j k_j / sqrt(dh),  dk_j += ds_j q_i / sqrt(dh).
 * Each batch element writes only its own rows, so batches run in parallel. */
void attention_backward(TapeEntry *e) {
    Tensor *q = e->in[0], *k = e->in[1], *v = e->in[2], *y = e->out;
    int heads = e->iarg[0], causal = e->iarg[1];
    int batch = k->shape[0], seq = k->shape[1], d = k->shape[2], tq = q->shape[1];
    int dh = d / heads, offset = seq - tq;
    float scale = 1.0f / sqrtf((float)dh);
    const float *probs = e->saved;
    if (q->grad) tensor_grad_claim_zeroed(q);
    if (k->grad) tensor_grad_claim_zeroed(k);
    if (v->grad) tensor_grad_claim_zeroed(v);
#pragma omp parallel for schedule(static) if ((long)batch * tq * seq * d > PARALLEL_MIN / 4)
    for (int b = 0; b < batch; b++) {
        float ds[seq];
        for (int h = 0; h < heads; h++) {
            for (int i = 0; i < tq; i++) {
                const float *p = probs + (((long)b * heads + h) * tq + i) * seq;
                const float *dyi = y->grad + ((long)b * tq + i) * d + h * dh;
                const float *qi = q->data + ((long)b * tq + i) * d + h * dh;
                int last = causal ? offset + i : seq - 1;
                float dot = 0.0f;
                for (int j = 0; j <= last; j++) {
                    const float *vj = v->data + ((long)b * seq + j) * d + h * dh;
                    float dp = 0.0f;
                    for (int c = 0; c < dh; c++) dp += dyi[c] * vj[c];
                    ds[j] = dp;
                    dot += p[j] * dp;
                    if (v->grad) {
                        float *dvj = v->grad + ((long)b * seq + j) * d + h * dh;
                        for (int c = 0; c < dh; c++) dvj[c] += p[j] * dyi[c];
                    }
                }
                for (int j = 0; j <= last; j++) ds[j] = p[j] * (ds[j] - dot) * scale;
                for (int j = 0; j <= last; j++) {
                    const float *kj = k->data + ((long)b * seq + j) * d + h * dh;
                    if (q->grad) {
                        float *dqi = q->grad + ((long)b * tq + i) * d + h * dh;
                        for (int c = 0; c < dh; c++) dqi[c] += ds[j] * kj[c];
                    }
                    if (k->grad) {
                        float *dkj = k->grad + ((long)b * seq + j) * d + h * dh;
                        for (int c = 0; c < dh; c++) dkj[c] += ds[j] * qi[c];
                    }
                }
            }
        }
    }
}

/* ---- layernorm over the last dimension ---------------------------------- */

Tensor *op_layernorm(Graph *g, Tensor *x, Tensor *gamma, Tensor *beta, float eps) {
    int c = tensor_cols(x);
    SHAPE_CHECK(gamma->size == c && beta->size == c, "layernorm", x, gamma, beta);
    long rows = tensor_rows(x);
    int needs = graph_needs_grad(g, x, gamma, beta);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    /* stats[2r] = mean, stats[2r + 1] = 1 / sqrt(var + eps), kept for backward. */
    float *stats = arena_alloc(&g->arena, (size_t)rows * 2 * sizeof(float));
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long r = 0; r < rows; r++) {
        const float *xr = x->data + r * c;
        float mean = 0.0f;
        for (int j = 0; j < c; j++) mean += xr[j];
        mean /= (float)c;
        float var = 0.0f;
        for (int j = 0; j < c; j++) var += (xr[j] - mean) * (xr[j] - mean);
        var /= (float)c;
        float rstd = 1.0f / sqrtf(var + eps);
        stats[2 * r] = mean;
        stats[2 * r + 1] = rstd;
        for (int j = 0; j < c; j++) y->data[r * c + j] = (xr[j] - mean) * rstd * gamma->data[j] + beta->data[j];
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_LAYERNORM, y);
        e->in[0] = x;
        e->in[1] = gamma;
        e->in[2] = beta;
        e->saved = stats;
    }
    return y;
}

/* Differentiates y = x̂ γ + β with x̂ = (x − μ) r, r = 1/sqrt(var + eps):
 *   dx = r (g − mean(g) − x̂ mean(g x̂)) with g = dy γ,
 *   dγ += Σ_rows dy x̂,  dβ += Σ_rows dy. */
void layernorm_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *gamma = e->in[1], *beta = e->in[2];
    const float *dy = e->out->grad;
    const float *stats = e->saved;
    int c = tensor_cols(x);
    long rows = tensor_rows(x);
    if (x->grad) {
        int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
        for (long r = 0; r < rows; r++) {
            const float *xr = x->data + r * c, *dyr = dy + r * c;
            float mean = stats[2 * r], rstd = stats[2 * r + 1];
            float mg = 0.0f, mgx = 0.0f;
            for (int j = 0; j < c; j++) {
                float gj = dyr[j] * gamma->data[j];
                mg += gj;
                mgx += gj * (xr[j] - mean) * rstd;
            }
            mg /= (float)c;
            mgx /= (float)c;
            for (int j = 0; j < c; j++) {
                float xhat = (xr[j] - mean) * rstd;
                GRAD_PUT(store, x->grad, r * c + j, rstd * (dyr[j] * gamma->data[j] - mg - xhat * mgx));
            }
        }
    }
    if (gamma->grad) tensor_grad_claim_zeroed(gamma);
    if (beta->grad) tensor_grad_claim_zeroed(beta);
    if (gamma->grad || beta->grad) {
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
        for (int j = 0; j < c; j++) {
            float sg = 0.0f, sb = 0.0f;
            for (long r = 0; r < rows; r++) {
                float xhat = (x->data[r * c + j] - stats[2 * r]) * stats[2 * r + 1];
                sg += dy[r * c + j] * xhat;
                sb += dy[r * c + j];
            }
            if (gamma->grad) gamma->grad[j] += sg;
            if (beta->grad) beta->grad[j] += sb;
        }
    }
}
