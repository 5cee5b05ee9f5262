/* Losses: softmax cross-entropy and mean squared error, both reduced by the
 * mean as PyTorch's default reduction does. */
#include <math.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* ---- cross_entropy: mean_i (logsumexp(z_i) − z_i[y_i]) ------------------ */

Tensor *op_cross_entropy(Graph *g, Tensor *logits, const int *labels) {
    int c = tensor_cols(logits);
    long n = tensor_rows(logits);
    for (long i = 0; i < n; i++)
        CHECK(labels[i] >= 0 && labels[i] < c, "cross_entropy: label %d at row %ld outside [0, %d)", labels[i], i, c);
    int needs = graph_needs_grad(g, logits, NULL, NULL);
    Tensor *loss = op_output(g, 1, (int[]){1}, needs);
    float *lse = arena_alloc(&g->arena, (size_t)n * sizeof(float));
    /* The max shift keeps exp() from overflowing for large logits. */
#pragma omp parallel for schedule(static) if (logits->size > PARALLEL_MIN)
    for (long i = 0; i < n; i++) {
        const float *z = logits->data + i * c;
        float max = z[0];
        for (int j = 1; j < c; j++)
            if (z[j] > max) max = z[j];
        float sum = 0.0f;
        for (int j = 0; j < c; j++) sum += expf(z[j] - max);
        lse[i] = max + logf(sum);
    }
    double total = 0.0;
    for (long i = 0; i < n; i++) total += (double)lse[i] - (double)logits->data[i * c + labels[i]];
    loss->data[0] = (float)(total / (double)n);
    if (needs) {
        TapeEntry *e = graph_record(g, OP_CROSS_ENTROPY, loss);
        e->in[0] = logits;
        e->saved = lse;
        int *saved_labels = arena_alloc(&g->arena, (size_t)n * sizeof(int));
        memcpy(saved_labels, labels, (size_t)n * sizeof(int));
        e->saved2 = saved_labels;
    }
    return loss;
}

/* Differentiates L = mean_i (lse_i − z_i[y_i]): dz_ij += dL (softmax_ij − [j = y_i]) / N. */
void cross_entropy_backward(TapeEntry *e) {
    Tensor *logits = e->in[0];
    const float *lse = e->saved;
    const int *labels = e->saved2;
    int c = tensor_cols(logits);
    long n = tensor_rows(logits);
    float dl = e->out->grad[0] / (float)n;
    int store = tensor_grad_claim(logits);
#pragma omp parallel for schedule(static) if (logits->size > PARALLEL_MIN)
    for (long i = 0; i < n; i++) {
        const float *z = logits->data + i * c;
        float *dz = logits->grad + i * c;
        for (int j = 0; j < c; j++) GRAD_PUT(store, dz, j, dl * expf(z[j] - lse[i]));
        dz[labels[i]] -= dl;
    }
}

/* ---- mse: mean over all elements of (pred − target)² -------------------- */

Tensor *op_mse(Graph *g, Tensor *pred, Tensor *target) {
    SHAPE_CHECK(pred->size == target->size, "mse", pred, target, NULL);
    int needs = graph_needs_grad(g, pred, NULL, NULL);
    Tensor *loss = op_output(g, 1, (int[]){1}, needs);
    double total = 0.0;
    for (long i = 0; i < pred->size; i++) {
        double diff = (double)pred->data[i] - (double)target->data[i];
        total += diff * diff;
    }
    loss->data[0] = (float)(total / (double)pred->size);
    if (needs) {
        TapeEntry *e = graph_record(g, OP_MSE, loss);
        e->in[0] = pred;
        e->in[1] = target;
    }
    return loss;
}

/* Differentiates L = mean (p − t)²: dp += dL · 2 (p − t) / n. */
void mse_backward(TapeEntry *e) {
    Tensor *pred = e->in[0], *target = e->in[1];
    long n = pred->size;
    float k = 2.0f * e->out->grad[0] / (float)n;
    int store = tensor_grad_claim(pred);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) GRAD_PUT(store, pred->grad, i, k * (pred->data[i] - target->data[i]));
}
