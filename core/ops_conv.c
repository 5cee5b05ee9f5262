/* Image ops on NCHW tensors: conv2d lowered to GEMM through im2col, and
 * max, average and global average pooling.
 *
 * Dimension letters: N batch, C input channels, H × W input size, O output
 * channels, KH × KW kernel, OH × OW output size, L = OH·OW output positions,
 * K = C·KH·KW rows of the im2col matrix (the traced kernel is O × K). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "ops.h"
#include "ops_internal.h"

typedef struct {
    int c, h, w;          /* input channels and size */
    int kh, kw;           /* kernel */
    int oh, ow;           /* output size */
    int stride, padding;
} ConvGeometry;

/* Output size of a window sliding over n positions, floor mode; 0 when the window does not fit. */
static int pooled_size(int n, int kernel, int stride, int padding) {
    int span = n + 2 * padding - kernel;
    return span < 0 ? 0 : span / stride + 1;
}

/* col[K, L] = the input patch under each output position of one sample
 * x [C, H, W]; positions in the zero padding read 0. */
static void im2col(const ConvGeometry *cg, const float *x, float *col) {
    long l_count = (long)cg->oh * cg->ow;
    for (int c = 0; c < cg->c; c++)
        for (int i = 0; i < cg->kh; i++)
            for (int j = 0; j < cg->kw; j++) {
                float *row = col + ((long)(c * cg->kh + i) * cg->kw + j) * l_count;
                for (int oy = 0; oy < cg->oh; oy++) {
                    int iy = oy * cg->stride - cg->padding + i;
                    float *dst = row + (long)oy * cg->ow;
                    if (iy < 0 || iy >= cg->h) {
                        memset(dst, 0, (size_t)cg->ow * sizeof(float));
                        continue;
                    }
                    const float *src = x + ((long)c * cg->h + iy) * cg->w;
                    for (int ox = 0; ox < cg->ow; ox++) {
                        int ix = ox * cg->stride - cg->padding + j;
                        dst[ox] = ix >= 0 && ix < cg->w ? src[ix] : 0.0f;
                    }
                }
            }
}

/* dx [C, H, W] += the patches of col [K, L] scattered back (the adjoint of im2col). */
static void col2im_add(const ConvGeometry *cg, const float *col, float *dx) {
    long l_count = (long)cg->oh * cg->ow;
    for (int c = 0; c < cg->c; c++)
        for (int i = 0; i < cg->kh; i++)
            for (int j = 0; j < cg->kw; j++) {
                const float *row = col + ((long)(c * cg->kh + i) * cg->kw + j) * l_count;
                for (int oy = 0; oy < cg->oh; oy++) {
                    int iy = oy * cg->stride - cg->padding + i;
                    if (iy < 0 || iy >= cg->h) continue;
                    float *dst = dx + ((long)c * cg->h + iy) * cg->w;
                    const float *src = row + (long)oy * cg->ow;
                    for (int ox = 0; ox < cg->ow; ox++) {
                        int ix = ox * cg->stride - cg->padding + j;
                        if (ix >= 0 && ix < cg->w) dst[ix] += src[ox];
                    }
                }
            }
}

/* Threads for a loop over the batch: one sample per thread at least. Inside
 * the parallel region OpenBLAS runs single-threaded; with one sample the
 * loop is serial and sgemm uses every thread itself. */
static int batch_threads(int n) {
    int t = omp_get_max_threads();
    return n < t ? n : t;
}

/* ---- conv2d: y[N, O, OH, OW] = w[O, K] · im2col(x[n]) + b ---------------- */

Tensor *op_conv2d(Graph *g, Tensor *x, Tensor *w, Tensor *b, int stride, int padding) {
    SHAPE_CHECK(x->ndim == 4 && w->ndim == 4 && w->shape[1] == x->shape[1], "conv2d", x, w, b);
    SHAPE_CHECK(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]), "conv2d", x, w, b);
    SHAPE_CHECK(stride >= 1 && padding >= 0, "conv2d", x, w, b);
    ConvGeometry cg = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3], 0, 0, stride, padding};
    cg.oh = pooled_size(cg.h, cg.kh, stride, padding);
    cg.ow = pooled_size(cg.w, cg.kw, stride, padding);
    SHAPE_CHECK(cg.oh >= 1 && cg.ow >= 1, "conv2d", x, w, b);
    int n = x->shape[0], o = w->shape[0];
    int k = cg.c * cg.kh * cg.kw, l_count = cg.oh * cg.ow;
    int needs = graph_needs_grad(g, x, w, b);
    Tensor *y = op_output(g, 4, (int[]){n, o, cg.oh, cg.ow}, needs);
    int threads = batch_threads(n);
    float *cols = arena_alloc(&g->arena, (size_t)threads * k * l_count * sizeof(float));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
    for (int s = 0; s < n; s++) {
        float *col = cols + (size_t)omp_get_thread_num() * k * l_count;
        float *ys = y->data + (size_t)s * o * l_count;
        im2col(&cg, x->data + (size_t)s * cg.c * cg.h * cg.w, col);
        if (b)
            for (int oc = 0; oc < o; oc++)
                for (int l = 0; l < l_count; l++) ys[(long)oc * l_count + l] = b->data[oc];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o, l_count, k, 1.0f, w->data, k, col, l_count,
                    b ? 1.0f : 0.0f, ys, l_count);
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_CONV2D, y);
        e->in[0] = x;
        e->in[1] = w;
        e->in[2] = b;
        e->iarg[0] = stride;
        e->iarg[1] = padding;
        e->iarg[2] = threads;
        /* Backward reuses the im2col buffers and sums dw in per-thread parts [threads, O, K]. */
        e->saved = cols;
        e->saved2 = w->grad ? arena_alloc(&g->arena, (size_t)threads * o * k * sizeof(float)) : NULL;
    }
    return y;
}

/* Differentiates y[n] = w · im2col(x[n]) + b: dx[n] += col2im(wᵀ dy[n]),
 * dw += Σ_n dy[n] im2col(x[n])ᵀ, db += Σ_{n, l} dy[n, :, l]. Each thread sums
 * dw over a contiguous block of samples into its own buffer and the blocks
 * are added in thread order, so the result depends on the thread count but
 * not on scheduling. */
void conv2d_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    int stride = e->iarg[0], padding = e->iarg[1];
    ConvGeometry cg = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                       y->shape[2], y->shape[3], stride, padding};
    int n = x->shape[0], o = w->shape[0];
    int k = cg.c * cg.kh * cg.kw, l_count = cg.oh * cg.ow;
    long x_plane = (long)cg.c * cg.h * cg.w;
    int threads = e->iarg[2];
    int x_store = x->grad ? tensor_grad_claim(x) : 0;
    float *cols = e->saved, *dw_parts = e->saved2;
    /* Zeroed here rather than per thread: the runtime may start fewer threads than requested. */
    if (dw_parts) memset(dw_parts, 0, (size_t)threads * o * k * sizeof(float));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        int s0 = (int)((long)n * t / nt), s1 = (int)((long)n * (t + 1) / nt);
        float *col = cols + (size_t)t * k * l_count;
        float *dw = dw_parts ? dw_parts + (size_t)t * o * k : NULL;
        for (int s = s0; s < s1; s++) {
            const float *dy = y->grad + (size_t)s * o * l_count;
            if (dw) {
                im2col(&cg, x->data + s * x_plane, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, o, k, l_count, 1.0f, dy, l_count, col, l_count,
                            1.0f, dw, k);
            }
            if (x->grad) {
                float *dx = x->grad + s * x_plane;
                if (x_store) memset(dx, 0, (size_t)x_plane * sizeof(float));
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, l_count, o, 1.0f, w->data, k, dy, l_count,
                            0.0f, col, l_count);
                col2im_add(&cg, col, dx);
            }
        }
    }
    if (dw_parts) {
        int store = tensor_grad_claim(w);
        long size = (long)o * k;
        for (long i = 0; i < size; i++) GRAD_PUT(store, w->grad, i, dw_parts[i]);
        for (int t = 1; t < threads; t++)
            for (long i = 0; i < size; i++) w->grad[i] += dw_parts[(size_t)t * size + i];
    }
    if (b && b->grad) {
        tensor_grad_claim_zeroed(b);
        for (int s = 0; s < n; s++)
            for (int oc = 0; oc < o; oc++) {
                const float *dy = y->grad + ((size_t)s * o + oc) * l_count;
                float acc = 0.0f;
                for (int l = 0; l < l_count; l++) acc += dy[l];
                b->grad[oc] += acc;
            }
    }
}

/* ---- pooling: shared geometry --------------------------------------------- */

static Tensor *pool_output(Graph *g, Tensor *x, int kernel, int stride, int padding, const char *op, int needs) {
    SHAPE_CHECK(x->ndim == 4 && kernel >= 1 && stride >= 1 && padding >= 0, op, x, NULL, NULL);
    /* PyTorch rejects padding above half the kernel: a window could then lie wholly in the padding. */
    SHAPE_CHECK(2 * padding <= kernel, op, x, NULL, NULL);
    int oh = pooled_size(x->shape[2], kernel, stride, padding), ow = pooled_size(x->shape[3], kernel, stride, padding);
    SHAPE_CHECK(oh >= 1 && ow >= 1, op, x, NULL, NULL);
    return op_output(g, 4, (int[]){x->shape[0], x->shape[1], oh, ow}, needs);
}

/* ---- max_pool2d: y[n, c, oy, ox] = max over the window of x[n, c] ------------ */

Tensor *op_max_pool2d(Graph *g, Tensor *x, int kernel, int stride, int padding) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = pool_output(g, x, kernel, stride, padding, "max_pool2d", needs);
    int h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    long planes = (long)x->shape[0] * x->shape[1];
    /* argmax[p, oy, ox]: index within input plane p of the element that won. */
    int *argmax = needs ? arena_alloc(&g->arena, (size_t)y->size * sizeof(int)) : NULL;
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long p = 0; p < planes; p++) {
        const float *xp = x->data + p * h * w;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float best = -INFINITY;
                int best_index = -1;
                for (int i = 0; i < kernel; i++) {
                    int iy = oy * stride - padding + i;
                    if (iy < 0 || iy >= h) continue;
                    for (int j = 0; j < kernel; j++) {
                        int ix = ox * stride - padding + j;
                        if (ix < 0 || ix >= w) continue;
                        float v = xp[iy * w + ix];
                        /* Strictly greater keeps the first maximum; NaN propagates, as in PyTorch. */
                        if (best_index < 0 || v > best || isnan(v)) {
                            best = v;
                            best_index = iy * w + ix;
                        }
                    }
                }
                long out = (p * oh + oy) * ow + ox;
                y->data[out] = best;
                if (argmax) argmax[out] = best_index;
            }
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_MAX_POOL2D, y);
        e->in[0] = x;
        e->saved = argmax;
    }
    return y;
}

/* Differentiates y = max over each window: dx[argmax] += dy. */
void max_pool2d_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *y = e->out;
    const int *argmax = e->saved;
    long plane = (long)x->shape[2] * x->shape[3], out_plane = (long)y->shape[2] * y->shape[3];
    long planes = (long)x->shape[0] * x->shape[1];
    int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long p = 0; p < planes; p++) {
        float *dx = x->grad + p * plane;
        if (store) memset(dx, 0, (size_t)plane * sizeof(float));
        for (long i = 0; i < out_plane; i++) dx[argmax[p * out_plane + i]] += y->grad[p * out_plane + i];
    }
}

/* ---- avg_pool2d: y[n, c, oy, ox] = Σ over the window of x[n, c] / kernel² ---- */

Tensor *op_avg_pool2d(Graph *g, Tensor *x, int kernel, int stride, int padding) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = pool_output(g, x, kernel, stride, padding, "avg_pool2d", needs);
    int h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    long planes = (long)x->shape[0] * x->shape[1];
    float inv = 1.0f / (float)(kernel * kernel);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long p = 0; p < planes; p++) {
        const float *xp = x->data + p * h * w;
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float acc = 0.0f;
                for (int i = 0; i < kernel; i++) {
                    int iy = oy * stride - padding + i;
                    if (iy < 0 || iy >= h) continue;
                    for (int j = 0; j < kernel; j++) {
                        int ix = ox * stride - padding + j;
                        if (ix >= 0 && ix < w) acc += xp[iy * w + ix];
                    }
                }
                y->data[(p * oh + oy) * ow + ox] = acc * inv;
            }
    }
    if (needs) {
        TapeEntry *e = graph_record(g, OP_AVG_POOL2D, y);
        e->in[0] = x;
        e->iarg[0] = kernel;
        e->iarg[1] = stride;
        e->iarg[2] = padding;
    }
    return y;
}

/* Differentiates y = window sum / kernel²: each x in a window gets dy / kernel². */
void avg_pool2d_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *y = e->out;
    int kernel = e->iarg[0], stride = e->iarg[1], padding = e->iarg[2];
    int h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    long planes = (long)x->shape[0] * x->shape[1];
    float inv = 1.0f / (float)(kernel * kernel);
    int store = tensor_grad_claim(x);
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long p = 0; p < planes; p++) {
        float *dx = x->grad + p * h * w;
        if (store) memset(dx, 0, (size_t)h * w * sizeof(float));
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++) {
                float d = y->grad[(p * oh + oy) * ow + ox] * inv;
                for (int i = 0; i < kernel; i++) {
                    int iy = oy * stride - padding + i;
                    if (iy < 0 || iy >= h) continue;
                    for (int j = 0; j < kernel; j++) {
                        int ix = ox * stride - padding + j;
                        if (ix >= 0 && ix < w) dx[iy * w + ix] += d;
                    }
                }
            }
    }
}

/* ---- global_avg_pool: y[N, C] = mean over H, W of x[N, C, H, W] ------------ */

Tensor *op_global_avg_pool(Graph *g, Tensor *x) {
    SHAPE_CHECK(x->ndim == 4, "global_avg_pool", x, NULL, NULL);
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = op_output(g, 2, (int[]){x->shape[0], x->shape[1]}, needs);
    long plane = (long)x->shape[2] * x->shape[3];
    for (long p = 0; p < y->size; p++) {
        float acc = 0.0f;
        for (long i = 0; i < plane; i++) acc += x->data[p * plane + i];
        y->data[p] = acc / (float)plane;
    }
    if (needs) graph_record(g, OP_GLOBAL_AVG_POOL, y)->in[0] = x;
    return y;
}

/* Differentiates y = mean over the plane: dx += dy / (H·W). */
void global_avg_pool_backward(TapeEntry *e) {
    Tensor *x = e->in[0], *y = e->out;
    long plane = (long)x->shape[2] * x->shape[3];
    int store = tensor_grad_claim(x);
    for (long p = 0; p < y->size; p++) {
        float d = y->grad[p] / (float)plane;
        for (long i = 0; i < plane; i++) GRAD_PUT(store, x->grad, p * plane + i, d);
    }
}
