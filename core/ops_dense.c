/* Dense ops: linear, matmul, elementwise arithmetic and activations.
 * Matrix products go through cblas_sgemm (row-major). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

/* out[c] += Σ_r a[r, c] for a [rows, cols]. Each thread owns a contiguous
 * block of columns and walks the rows in order, so reads stay sequential and
 * the result does not depend on the thread count. */
static void column_sums_add(const float *a, long rows, int cols, float *out) {
    int threads = (long)rows * cols > PARALLEL_MIN ? omp_get_max_threads() : 1;
#pragma omp parallel num_threads(threads)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int c0 = (int)((long)cols * t / nt), c1 = (int)((long)cols * (t + 1) / nt);
        int width = c1 - c0;
        if (width > 0) {
            float acc[width];
            memset(acc, 0, (size_t)width * sizeof(float));
            for (long r = 0; r < rows; r++) {
                const float *row = a + r * cols + c0;
                for (int j = 0; j < width; j++) acc[j] += row[j];
            }
            for (int j = 0; j < width; j++) out[c0 + j] += acc[j];
        }
    }
}

/* Products with fewer multiply-adds than this run on one thread. */
#define GEMM_SPLIT_MIN_MACS (1L << 18)

/* Row-major C[M, N] = op(A) op(B) + beta C with C cut into one block per
 * thread, each a single-threaded sgemm (OpenBLAS runs serially inside an
 * active OpenMP region): blocks of rows, or of columns when N is the larger
 * side. For the narrow products of small MLPs this replaces OpenBLAS's own
 * threading, whose synchronisation costs more than the work. Results repeat
 * bit for bit at a fixed thread count but can change with it. OpenBLAS
 * 0.3.21 may run a block with its small-matrix kernel and the whole product
 * with its blocked one, and 128 × 256 → 10 differs between 1 and 2 threads. */
static void sgemm_split(CBLAS_TRANSPOSE ta, CBLAS_TRANSPOSE tb, int m, int n, int k, const float *a, int lda,
                        const float *b, int ldb, float beta, float *c, int ldc) {
    int threads = (long)m * n * k >= GEMM_SPLIT_MIN_MACS ? omp_get_max_threads() : 1;
    int by_rows = m >= n;
    int extent = by_rows ? m : n;
    if (threads > extent / 8) threads = extent / 8 > 1 ? extent / 8 : 1;
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int lo = (int)((long)extent * t / nt), hi = (int)((long)extent * (t + 1) / nt);
        if (hi > lo && by_rows) {
            /* Rows lo..hi of op(A): rows of A, or columns of A when transposed. */
            const float *a_block = ta == CblasNoTrans ? a + (long)lo * lda : a + lo;
            cblas_sgemm(CblasRowMajor, ta, tb, hi - lo, n, k, 1.0f, a_block, lda, b, ldb, beta,
                        c + (long)lo * ldc, ldc);
        } else if (hi > lo) {
            /* Columns lo..hi of op(B): columns of B, or rows of B when transposed. */
            const float *b_block = tb == CblasNoTrans ? b + lo : b + (long)lo * ldb;
            cblas_sgemm(CblasRowMajor, ta, tb, m, hi - lo, k, 1.0f, a, lda, b_block, ldb, beta, c + lo, ldc);
        }
    }
}

/* ---- linear: y[R, out] = x[R, in] Wᵀ + b -------------------------------- */

Tensor *op_linear(Graph *g, Tensor *x, Tensor *w, Tensor *b) {
    int in = tensor_cols(x);
    SHAPE_CHECK(w->ndim == 2 && w->shape[1] == in, "linear", x, w, b);
    SHAPE_CHECK(!b || (b->size == w->shape[0]), "linear", x, w, b);
    int out_dim = w->shape[0];
    long rows = tensor_rows(x);
    int shape[TENSOR_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = out_dim;
    int needs = graph_needs_grad(g, x, w, b);
    Tensor *y = op_output(g, x->ndim, shape, needs);
    float beta = 0.0f;
    if (b) {
        for (long r = 0; r < rows; r++) memcpy(y->data + r * out_dim, b->data, (size_t)out_dim * sizeof(float));
        beta = 1.0f;
    }
    sgemm_split(CblasNoTrans, CblasTrans, (int)rows, out_dim, in, x->data, in, w->data, in, beta, y->data, out_dim);
    if (needs) {
        TapeEntry *e = graph_record(g, OP_LINEAR, y);
        e->in[0] = x;
        e->in[1] = w;
        e->in[2] = b;
    }
    return y;
}

/* Differentiates y = x Wᵀ + b: dx += dy W, dW += dyᵀ x, db += Σ_rows dy. */
void linear_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    int in = tensor_cols(x), out_dim = w->shape[0];
    int rows = (int)tensor_rows(x);
    if (x->grad)
        sgemm_split(CblasNoTrans, CblasNoTrans, rows, in, out_dim, y->grad, out_dim, w->data, in,
                    tensor_grad_claim(x) ? 0.0f : 1.0f, x->grad, in);
    if (w->grad)
        sgemm_split(CblasTrans, CblasNoTrans, out_dim, in, rows, y->grad, out_dim, x->data, in,
                    tensor_grad_claim(w) ? 0.0f : 1.0f, w->grad, in);
    if (b && b->grad) {
        tensor_grad_claim_zeroed(b);
        column_sums_add(y->grad, rows, out_dim, b->grad);
    }
}

/* ---- linear on a multi-hot input: y[R, out] = b + Σ_f W[:, ids[r, f]] ----
 *
 * The same as op_linear on the 0/1 matrix x[R, in] with ones at (r, ids[r, f])
 * (a repeated id counts twice), without building x or multiplying by its
 * zeros: each output row is a sum of F rows of Wᵀ. */

Tensor *op_linear_onehot(Graph *g, const int *ids, int rows, int fields, Tensor *w, Tensor *b) {
    SHAPE_CHECK(w->ndim == 2 && rows >= 0 && fields >= 1, "linear_onehot", w, b, NULL);
    SHAPE_CHECK(!b || (b->size == w->shape[0]), "linear_onehot", w, b, NULL);
    int out_dim = w->shape[0], in = w->shape[1];
    long n = (long)rows * fields;
    for (long i = 0; i < n; i++)
        CHECK(ids[i] >= 0 && ids[i] < in, "linear_onehot: id %d at %ld outside [0, %d)", ids[i], i, in);
    int needs = graph_needs_grad(g, w, b, NULL);
    Tensor *y = op_output(g, 2, (int[]){rows, out_dim}, needs);
    /* Wᵀ [in, out], so that each gathered column is a contiguous row. */
    float *wt = arena_alloc(&g->arena, (size_t)in * out_dim * sizeof(float));
    for (int o = 0; o < out_dim; o++)
        for (int k = 0; k < in; k++) wt[(long)k * out_dim + o] = w->data[(long)o * in + k];
#pragma omp parallel for schedule(static) if ((long)rows * out_dim > PARALLEL_MIN)
    for (int r = 0; r < rows; r++) {
        float *dst = y->data + (long)r * out_dim;
        const int *row_ids = ids + (long)r * fields;
        memcpy(dst, wt + (long)row_ids[0] * out_dim, (size_t)out_dim * sizeof(float));
        for (int f = 1; f < fields; f++) {
            const float *src = wt + (long)row_ids[f] * out_dim;
            for (int o = 0; o < out_dim; o++) dst[o] += src[o];
        }
        if (b)
            for (int o = 0; o < out_dim; o++) dst[o] += b->data[o];
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_LINEAR_ONEHOT, y);
        e->in[0] = w;
        e->in[1] = b;
        int *saved = arena_alloc(&g->arena, (size_t)n * sizeof(int));
        memcpy(saved, ids, (size_t)n * sizeof(int));
        e->saved = saved;
        e->iarg[0] = rows;
        e->iarg[1] = fields;
    }
    return y;
}

/* Differentiates op_linear_onehot: dW[:, ids[r, f]] += dy[r], db += Σ_rows dy.
 * The scatter adds the rows in order into a dense dWᵀ [in, out], which is
 * then transposed into dW. */
void linear_onehot_backward(TapeEntry *e) {
    Tensor *w = e->in[0], *b = e->in[1], *y = e->out;
    const int *ids = e->saved;
    int rows = e->iarg[0], fields = e->iarg[1];
    int out_dim = w->shape[0], in = w->shape[1];
    if (w->grad) {
        float *dwt = sd_calloc((size_t)in * out_dim, sizeof(float));
        scatter_add_rows(dwt, ids, (long)rows * fields, fields, y->grad, out_dim, 1.0f);
        int store = tensor_grad_claim(w);
        for (int o = 0; o < out_dim; o++)
            for (int k = 0; k < in; k++) GRAD_PUT(store, w->grad, (long)o * in + k, dwt[(long)k * out_dim + o]);
        free(dwt);
    }
    if (b && b->grad) {
        tensor_grad_claim_zeroed(b);
        column_sums_add(y->grad, rows, out_dim, b->grad);
    }
}

/* ---- matmul: y[M, N] = a[M, K] b[K, N] ---------------------------------- */

Tensor *op_matmul(Graph *g, Tensor *a, Tensor *b) {
    SHAPE_CHECK(a->ndim == 2 && b->ndim == 2 && a->shape[1] == b->shape[0], "matmul", a, b, NULL);
    int m = a->shape[0], k = a->shape[1], n = b->shape[1];
    int needs = graph_needs_grad(g, a, b, NULL);
    Tensor *y = op_output(g, 2, (int[]){m, n}, needs);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, m, n, k, 1.0f, a->data, k, b->data, n, 0.0f,
                y->data, n);
    if (needs) {
        TapeEntry *e = graph_record(g, OP_MATMUL, y);
        e->in[0] = a;
        e->in[1] = b;
    }
    return y;
}

/* Differentiates y = a b: da += dy bᵀ, db += aᵀ dy. */
void matmul_backward(TapeEntry *e) {
    Tensor *a = e->in[0], *b = e->in[1], *y = e->out;
    int m = a->shape[0], k = a->shape[1], n = b->shape[1];
    if (a->grad)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, k, n, 1.0f, y->grad, n, b->data, n,
                    tensor_grad_claim(a) ? 0.0f : 1.0f, a->grad, k);
    if (b->grad)
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, n, m, 1.0f, a->data, k, y->grad, n,
                    tensor_grad_claim(b) ? 0.0f : 1.0f, b->grad, n);
}

/* ---- add: y = a + b ----------------------------------------------------- */

static int same_shape(const Tensor *a, const Tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

Tensor *op_add(Graph *g, Tensor *a, Tensor *b) {
    SHAPE_CHECK(same_shape(a, b), "add", a, b, NULL);
    int needs = graph_needs_grad(g, a, b, NULL);
    Tensor *y = op_output(g, a->ndim, a->shape, needs);
    long n = a->size;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) y->data[i] = a->data[i] + b->data[i];
    if (needs) {
        TapeEntry *e = graph_record(g, OP_ADD, y);
        e->in[0] = a;
        e->in[1] = b;
    }
    return y;
}

/* Differentiates y = a + b: da += dy, db += dy. */
void add_backward(TapeEntry *e) {
    long n = e->out->size;
    const float *dy = e->out->grad;
    for (int k = 0; k < 2; k++) {
        float *dx = e->in[k]->grad;
        if (!dx) continue;
        int store = tensor_grad_claim(e->in[k]);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
        for (long i = 0; i < n; i++) GRAD_PUT(store, dx, i, dy[i]);
    }
}

/* ---- add_bias: y[R, C] = x[R, C] + b[C] --------------------------------- */

Tensor *op_add_bias(Graph *g, Tensor *x, Tensor *b) {
    int c = tensor_cols(x);
    SHAPE_CHECK(b->ndim == 1 && b->shape[0] == c, "add_bias", x, b, NULL);
    long rows = tensor_rows(x);
    int needs = graph_needs_grad(g, x, b, NULL);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long r = 0; r < rows; r++)
        for (int j = 0; j < c; j++) y->data[r * c + j] = x->data[r * c + j] + b->data[j];
    if (needs) {
        TapeEntry *e = graph_record(g, OP_ADD_BIAS, y);
        e->in[0] = x;
        e->in[1] = b;
    }
    return y;
}

/* Differentiates y = x + b (b broadcast over rows): dx += dy, db += Σ_rows dy. */
void add_bias_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *b = e->in[1], *y = e->out;
    int c = tensor_cols(x);
    long rows = tensor_rows(x);
    if (x->grad) {
        int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
        for (long i = 0; i < x->size; i++) GRAD_PUT(store, x->grad, i, y->grad[i]);
    }
    if (b->grad) {
        tensor_grad_claim_zeroed(b);
        column_sums_add(y->grad, rows, c, b->grad);
    }
}

/* ---- mul: y = a ⊙ b ----------------------------------------------------- */

Tensor *op_mul(Graph *g, Tensor *a, Tensor *b) {
    SHAPE_CHECK(same_shape(a, b), "mul", a, b, NULL);
    int needs = graph_needs_grad(g, a, b, NULL);
    Tensor *y = op_output(g, a->ndim, a->shape, needs);
    long n = a->size;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) y->data[i] = a->data[i] * b->data[i];
    if (needs) {
        TapeEntry *e = graph_record(g, OP_MUL, y);
        e->in[0] = a;
        e->in[1] = b;
    }
    return y;
}

/* Differentiates y = a ⊙ b: da += dy ⊙ b, db += dy ⊙ a. */
void mul_backward(TapeEntry *e) {
    Tensor *a = e->in[0], *b = e->in[1];
    const float *dy = e->out->grad;
    long n = e->out->size;
    if (a->grad) {
        int store = tensor_grad_claim(a);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
        for (long i = 0; i < n; i++) GRAD_PUT(store, a->grad, i, dy[i] * b->data[i]);
    }
    if (b->grad) {
        int store = tensor_grad_claim(b);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
        for (long i = 0; i < n; i++) GRAD_PUT(store, b->grad, i, dy[i] * a->data[i]);
    }
}

/* ---- scale: y = s x ----------------------------------------------------- */

Tensor *op_scale(Graph *g, Tensor *x, float s) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    long n = x->size;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) y->data[i] = s * x->data[i];
    if (needs) {
        TapeEntry *e = graph_record(g, OP_SCALE, y);
        e->in[0] = x;
        e->farg[0] = s;
    }
    return y;
}

/* Differentiates y = s x: dx += s dy. */
void scale_backward(TapeEntry *e) {
    Tensor *x = e->in[0];
    float s = e->farg[0];
    long n = x->size;
    int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) GRAD_PUT(store, x->grad, i, s * e->out->grad[i]);
}

/* ---- relu: y = max(x, 0) ------------------------------------------------ */

Tensor *op_relu(Graph *g, Tensor *x) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    long n = x->size;
    const float *restrict xv = x->data;
    float *restrict yv = y->data;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
    for (long i = 0; i < n; i++) yv[i] = xv[i] > 0.0f ? xv[i] : 0.0f;
    if (needs) graph_record(g, OP_RELU, y)->in[0] = x;
    return y;
}

/* Differentiates y = max(x, 0): dx += dy where x > 0 (PyTorch takes 0 at x = 0). */
void relu_backward(TapeEntry *e) {
    Tensor *x = e->in[0];
    long n = x->size;
    int store = tensor_grad_claim(x);
    /* Local restrict pointers: through the structs the compiler must assume
     * aliasing and cannot vectorise. */
    float *restrict dx = x->grad;
    const float *restrict xv = x->data, *restrict dy = e->out->grad;
    if (store) {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
        for (long i = 0; i < n; i++) dx[i] = xv[i] > 0.0f ? dy[i] : 0.0f;
    } else {
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN)
        for (long i = 0; i < n; i++) dx[i] += xv[i] > 0.0f ? dy[i] : 0.0f;
    }
}

/* ---- gelu: y = x Φ(x) --------------------------------------------------- */

Tensor *op_gelu(Graph *g, Tensor *x) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, x->ndim, x->shape, needs);
    long n = x->size;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN / 8)
    for (long i = 0; i < n; i++) {
        float v = x->data[i];
        y->data[i] = 0.5f * v * (1.0f + erff(v * (float)M_SQRT1_2));
    }
    if (needs) graph_record(g, OP_GELU, y)->in[0] = x;
    return y;
}

/* Differentiates y = x Φ(x): dx += dy (Φ(x) + x φ(x)), φ the standard normal density. */
void gelu_backward(TapeEntry *e) {
    Tensor *x = e->in[0];
    long n = x->size;
    int store = tensor_grad_claim(x);
    const float inv_sqrt_2pi = 0.3989422804014327f;
#pragma omp parallel for schedule(static) if (n > PARALLEL_MIN / 8)
    for (long i = 0; i < n; i++) {
        float v = x->data[i];
        float cdf = 0.5f * (1.0f + erff(v * (float)M_SQRT1_2));
        float pdf = inv_sqrt_2pi * expf(-0.5f * v * v);
        GRAD_PUT(store, x->grad, i, e->out->grad[i] * (cdf + v * pdf));
    }
}
