/* Image ops on NCHW tensors: conv2d lowered to GEMM through im2col, and
 * max, average and global average pooling.
 *
 * Dimension letters: N batch, C input channels, H × W input size, O output
 * channels, KH × KW kernel, OH × OW output size, L = OH·OW output positions,
 * K = C·KH·KW rows of the im2col matrix (the traced kernel is O × K). */
#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
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

/* The output columns ox whose input column ox·stride − padding + j lies
 * inside the image, as the half-open range [lo, hi). */
static void valid_columns(const ConvGeometry *cg, int j, int *lo, int *hi) {
    int first = cg->padding - j, end = cg->w + cg->padding - j; /* stride 1: ix = ox − first */
    if (cg->stride == 1) {
        *lo = first > 0 ? first : 0;
        *hi = end < cg->ow ? end : cg->ow;
    } else {
        *lo = first > 0 ? (first + cg->stride - 1) / cg->stride : 0;
        int last = end > 0 ? (end - 1) / cg->stride + 1 : 0; /* first ox with ix >= w */
        *hi = last < cg->ow ? last : cg->ow;
    }
    if (*lo > cg->ow) *lo = cg->ow;
    if (*hi < *lo) *hi = *lo;
}

/* col[K, S·L] = the input patches of the S samples x[S, C, H, W]: row
 * (c, i, j), column s·L + oy·OW + ox; positions in the zero padding read 0. */
static void im2col(const ConvGeometry *cg, const float *x, int samples, float *col) {
    long l_count = (long)cg->oh * cg->ow, ld = samples * l_count, plane = (long)cg->h * cg->w;
    for (int c = 0; c < cg->c; c++)
        for (int i = 0; i < cg->kh; i++)
            for (int j = 0; j < cg->kw; j++) {
                int lo, hi;
                valid_columns(cg, j, &lo, &hi);
                float *row = col + ((long)(c * cg->kh + i) * cg->kw + j) * ld;
                for (int s = 0; s < samples; s++) {
                    const float *xs = x + ((long)s * cg->c + c) * plane;
                    for (int oy = 0; oy < cg->oh; oy++) {
                        int iy = oy * cg->stride - cg->padding + i;
                        float *dst = row + s * l_count + (long)oy * cg->ow;
                        if (iy < 0 || iy >= cg->h) {
                            memset(dst, 0, (size_t)cg->ow * sizeof(float));
                            continue;
                        }
                        /* Output column ox reads input column ox·stride + shift. */
                        const float *src = xs + (long)iy * cg->w;
                        long shift = j - cg->padding;
                        for (int ox = 0; ox < lo; ox++) dst[ox] = 0.0f;
                        if (cg->stride == 1)
                            for (int ox = lo; ox < hi; ox++) dst[ox] = src[ox + shift];
                        else
                            for (int ox = lo; ox < hi; ox++) dst[ox] = src[(long)ox * cg->stride + shift];
                        for (int ox = hi; ox < cg->ow; ox++) dst[ox] = 0.0f;
                    }
                }
            }
}

/* dx[S, C, H, W] += the patches of col [K, S·L] scattered back (the adjoint of im2col). */
static void col2im_add(const ConvGeometry *cg, const float *col, int samples, float *dx) {
    long l_count = (long)cg->oh * cg->ow, ld = samples * l_count, plane = (long)cg->h * cg->w;
    for (int c = 0; c < cg->c; c++)
        for (int i = 0; i < cg->kh; i++)
            for (int j = 0; j < cg->kw; j++) {
                int lo, hi;
                valid_columns(cg, j, &lo, &hi);
                const float *row = col + ((long)(c * cg->kh + i) * cg->kw + j) * ld;
                for (int s = 0; s < samples; s++) {
                    float *dxs = dx + ((long)s * cg->c + c) * plane;
                    for (int oy = 0; oy < cg->oh; oy++) {
                        int iy = oy * cg->stride - cg->padding + i;
                        if (iy < 0 || iy >= cg->h) continue;
                        float *dst = dxs + (long)iy * cg->w;
                        const float *src = row + s * l_count + (long)oy * cg->ow;
                        long shift = j - cg->padding;
                        if (cg->stride == 1)
                            for (int ox = lo; ox < hi; ox++) dst[ox + shift] += src[ox];
                        else
                            for (int ox = lo; ox < hi; ox++) dst[(long)ox * cg->stride + shift] += src[ox];
                    }
                }
            }
}

/* ---- conv2d: y[N, O, OH, OW] = w[O, K] · im2col(x) + b ---------------------
 *
 * The batch is cut into chunks of S samples whose im2col matrix [K, S·L]
 * stays near 2 MB. One GEMM per chunk then has a wide N dimension even for
 * 2 × 2 feature maps, and the matrix is still in cache when the GEMM reads
 * it. With at least as many chunks as threads, each thread takes a
 * contiguous block of chunks of about equal size, and OpenBLAS runs
 * single-threaded inside. Otherwise the chunks run in turn, with OpenBLAS
 * using every thread. */

typedef struct {
    int samples;   /* S, samples per chunk */
    int chunks;    /* ceil(N / S) */
    int workers;   /* threads over chunks; 1 means OpenBLAS threads each GEMM */
} ConvPlan;

#define CONV_CHUNK_FLOATS (1L << 19)

static ConvPlan conv_plan(int n, long k, long l_count) {
    ConvPlan p;
    int threads = omp_get_max_threads();
    long cols = CONV_CHUNK_FLOATS / k;
    int s = (int)(cols / l_count);
    if (s < 1) s = 1;
    if (s > n) s = n;
    p.chunks = (n + s - 1) / s;
    if (threads > 1 && p.chunks >= threads) {
        /* Size chunks for a multiple of the thread count; rounding up the size may leave fewer chunks. */
        int rounds = (p.chunks + threads - 1) / threads;
        s = (n + rounds * threads - 1) / (rounds * threads);
        p.chunks = (n + s - 1) / s;
        p.workers = threads;
    } else {
        p.workers = 1;
    }
    p.samples = s;
    return p;
}

/* Scratch shared by every conv2d call: ops run one at a time, so one buffer
 * grown to the largest layer's need serves them all. */
static float *conv_scratch(size_t floats) {
    static float *buffer;
    static size_t capacity;
    if (floats > capacity) {
        free(buffer);
        buffer = sd_malloc(floats * sizeof(float));
        capacity = floats;
    }
    return buffer;
}

/* Copy a chunk's GEMM output [O, S·L] into y[S, O, L], adding the bias. */
static void chunk_to_nchw(const float *ybuf, int samples, int o, long l_count, const float *bias, float *y) {
    long ld = samples * l_count;
    for (int s = 0; s < samples; s++)
        for (int oc = 0; oc < o; oc++) {
            const float *src = ybuf + oc * ld + s * l_count;
            float *dst = y + ((long)s * o + oc) * l_count;
            float add = bias ? bias[oc] : 0.0f;
            for (long l = 0; l < l_count; l++) dst[l] = src[l] + add;
        }
}

/* The inverse gather: dybuf[O, S·L] from dy[S, O, L]. */
static void nchw_to_chunk(const float *dy, int samples, int o, long l_count, float *dybuf) {
    long ld = samples * l_count;
    for (int s = 0; s < samples; s++)
        for (int oc = 0; oc < o; oc++)
            memcpy(dybuf + oc * ld + s * l_count, dy + ((long)s * o + oc) * l_count, (size_t)l_count * sizeof(float));
}

/* The reference forward: y = w · im2col(x) + b, chunk by chunk. */
static void conv2d_forward_reference(const ConvGeometry *cg_in, const Tensor *x, const Tensor *w, const Tensor *b,
                                     Tensor *y) {
    ConvGeometry cg = *cg_in;
    int n = x->shape[0], o = w->shape[0];
    long k = (long)cg.c * cg.kh * cg.kw, l_count = (long)cg.oh * cg.ow, x_plane = (long)cg.c * cg.h * cg.w;
    ConvPlan p = conv_plan(n, k, l_count);
    long cols = p.samples * l_count;
    float *scratch = conv_scratch((size_t)p.workers * (k + o) * cols);
#pragma omp parallel for schedule(static) num_threads(p.workers) if (p.workers > 1)
    for (int chunk = 0; chunk < p.chunks; chunk++) {
        int s0 = chunk * p.samples, count = n - s0 < p.samples ? n - s0 : p.samples;
        float *col = scratch + (size_t)omp_get_thread_num() * (k + o) * cols, *ybuf = col + k * cols;
        im2col(&cg, x->data + s0 * x_plane, count, col);
        if (count == 1) {
            float *ys = y->data + (size_t)s0 * o * l_count;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o, (int)l_count, (int)k, 1.0f, w->data, (int)k,
                        col, (int)l_count, 0.0f, ys, (int)l_count);
            if (b)
                for (int oc = 0; oc < o; oc++)
                    for (long l = 0; l < l_count; l++) ys[oc * l_count + l] += b->data[oc];
        } else {
            long ld = count * l_count;
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, o, (int)ld, (int)k, 1.0f, w->data, (int)k, col,
                        (int)ld, 0.0f, ybuf, (int)ld);
            chunk_to_nchw(ybuf, count, o, l_count, b ? b->data : NULL, y->data + (size_t)s0 * o * l_count);
        }
    }
}

/* True when the environment variable name is set to anything but "" or "0". */
static int env_flag(const char *name) {
    const char *value = getenv(name);
    return value && *value && strcmp(value, "0") != 0;
}

/* -1 until the first conv2d reads SPECDYN_CONV_REFERENCE; see conv2d_use_reference. */
static int reference_only = -1;

void conv2d_use_reference(int on) { reference_only = on; }

static int use_reference(void) {
    if (reference_only < 0) reference_only = env_flag("SPECDYN_CONV_REFERENCE");
    return reference_only;
}

static ConvDims conv_dims(const Tensor *x, const Tensor *w, const Tensor *b, const ConvGeometry *cg) {
    return (ConvDims){x->shape[0], cg->c, cg->h, cg->w, w->shape[0], cg->kh, cg->kw,
                      cg->oh, cg->ow, cg->stride, cg->padding, b != NULL};
}

Tensor *op_conv2d(Graph *g, Tensor *x, Tensor *w, Tensor *b, int stride, int padding) {
    SHAPE_CHECK(x->ndim == 4 && w->ndim == 4 && w->shape[1] == x->shape[1], "conv2d", x, w, b);
    SHAPE_CHECK(!b || (b->ndim == 1 && b->shape[0] == w->shape[0]), "conv2d", x, w, b);
    SHAPE_CHECK(stride >= 1 && padding >= 0, "conv2d", x, w, b);
    ConvGeometry cg = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3], 0, 0, stride, padding};
    cg.oh = pooled_size(cg.h, cg.kh, stride, padding);
    cg.ow = pooled_size(cg.w, cg.kw, stride, padding);
    SHAPE_CHECK(cg.oh >= 1 && cg.ow >= 1, "conv2d", x, w, b);
    int needs = graph_needs_grad(g, x, w, b);
    Tensor *y = op_output(g, 4, (int[]){x->shape[0], w->shape[0], cg.oh, cg.ow}, needs);
    ConvDims d = conv_dims(x, w, b, &cg);
    if (use_reference() || !conv_dnnl_forward(&d, x->data, w->data, b ? b->data : NULL, y->data))
        conv2d_forward_reference(&cg, x, w, b, y);
    if (needs) {
        TapeEntry *e = graph_record(g, OP_CONV2D, y);
        e->in[0] = x;
        e->in[1] = w;
        e->in[2] = b;
        e->iarg[0] = stride;
        e->iarg[1] = padding;
    }
    return y;
}

/* Differentiates y = w · im2col(x) + b: dx += col2im(wᵀ dy), dw += dy · im2col(x)ᵀ,
 * db += Σ_{n, l} dy[n, :, l]. With several workers each sums dw over its
 * block of chunks into its own buffer and the blocks are added in worker
 * order, so the result depends on the thread count but not on scheduling. */
static void conv2d_backward_reference(TapeEntry *e) {
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    int stride = e->iarg[0], padding = e->iarg[1];
    ConvGeometry cg = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                       y->shape[2], y->shape[3], stride, padding};
    int n = x->shape[0], o = w->shape[0];
    long k = (long)cg.c * cg.kh * cg.kw, l_count = (long)cg.oh * cg.ow, x_plane = (long)cg.c * cg.h * cg.w;
    ConvPlan p = conv_plan(n, k, l_count);
    long cols = p.samples * l_count;
    int x_store = x->grad ? tensor_grad_claim(x) : 0;
    /* Per worker: the im2col matrix, the chunk's dy and (with several workers) a dw part. */
    long dw_floats = w->grad && p.workers > 1 ? (long)o * k : 0;
    long per_worker = (k + o) * cols + dw_floats;
    float *scratch = conv_scratch((size_t)p.workers * per_worker);
    int w_store = w->grad ? tensor_grad_claim(w) : 0;
    if (w->grad && p.workers == 1 && w_store) memset(w->grad, 0, (size_t)(o * k) * sizeof(float));
    /* The dw parts are zeroed here rather than per thread: the runtime may start fewer threads than requested. */
    for (int t = 0; dw_floats > 0 && t < p.workers; t++)
        memset(scratch + (size_t)t * per_worker + (k + o) * cols, 0, (size_t)dw_floats * sizeof(float));
#pragma omp parallel num_threads(p.workers) if (p.workers > 1)
    {
        int t = omp_get_thread_num(), nt = omp_get_num_threads();
        float *col = scratch + (size_t)t * per_worker, *dybuf = col + k * cols;
        /* Several workers sum into parts that are added afterwards, a single one into w->grad itself. */
        float *dw = NULL;
        if (w->grad) dw = p.workers > 1 ? dybuf + o * cols : w->grad;
        /* The same contiguous blocks as schedule(static) over nt threads. */
        int c0 = (int)((long)p.chunks * t / nt), c1 = (int)((long)p.chunks * (t + 1) / nt);
        for (int chunk = c0; chunk < c1; chunk++) {
            int s0 = chunk * p.samples, count = n - s0 < p.samples ? n - s0 : p.samples;
            long ld = count * l_count;
            const float *dy = y->grad + (size_t)s0 * o * l_count;
            if (count > 1) {
                nchw_to_chunk(dy, count, o, l_count, dybuf);
                dy = dybuf;
            }
            if (dw) {
                im2col(&cg, x->data + s0 * x_plane, count, col);
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, o, (int)k, (int)ld, 1.0f, dy, (int)ld, col,
                            (int)ld, 1.0f, dw, (int)k);
            }
            if (x->grad) {
                float *dx = x->grad + s0 * x_plane;
                if (x_store) memset(dx, 0, (size_t)(count * x_plane) * sizeof(float));
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)k, (int)ld, o, 1.0f, w->data, (int)k, dy,
                            (int)ld, 0.0f, col, (int)ld);
                col2im_add(&cg, col, count, dx);
            }
        }
    }
    if (w->grad && p.workers > 1) {
        long size = (long)o * k;
        for (int t = 0; t < p.workers; t++) {
            const float *part = scratch + (size_t)t * per_worker + (k + o) * cols;
            if (t == 0)
                for (long i = 0; i < size; i++) GRAD_PUT(w_store, w->grad, i, part[i]);
            else
                for (long i = 0; i < size; i++) w->grad[i] += part[i];
        }
    }
    if (b && b->grad) {
        tensor_grad_claim_zeroed(b);
        for (int s = 0; s < n; s++)
            for (int oc = 0; oc < o; oc++) {
                const float *dy = y->grad + ((size_t)s * o + oc) * l_count;
                float acc = 0.0f;
                for (long l = 0; l < l_count; l++) acc += dy[l];
                b->grad[oc] += acc;
            }
    }
}

/* The same gradients through oneDNN; returns 0, having written nothing, when
 * oneDNN has no backward primitives for the shape. */
static int conv2d_backward_dnnl(TapeEntry *e) {
    Tensor *x = e->in[0], *w = e->in[1], *b = e->in[2], *y = e->out;
    ConvGeometry cg = {x->shape[1], x->shape[2], x->shape[3], w->shape[2], w->shape[3],
                       y->shape[2], y->shape[3], e->iarg[0], e->iarg[1]};
    ConvDims d = conv_dims(x, w, b, &cg);
    if (!conv_dnnl_backward_ready(&d)) return 0;
    ConvGrads grads = {0};
    if (x->grad) {
        grads.dx = x->grad;
        grads.dx_add = !tensor_grad_claim(x);
    }
    if (w->grad) {
        grads.dw = w->grad;
        grads.dw_add = !tensor_grad_claim(w);
    }
    if (b && b->grad) {
        grads.db = b->grad;
        grads.db_add = !tensor_grad_claim(b);
    }
    conv_dnnl_backward(&d, x->data, w->data, y->grad, &grads);
    return 1;
}

void conv2d_backward(TapeEntry *e) {
    if (use_reference() || !conv2d_backward_dnnl(e)) conv2d_backward_reference(e);
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

/* -1 until the first max_pool2d reads SPECDYN_POOL_REFERENCE; see max_pool2d_use_reference. */
static int pool_reference_only = -1;

void max_pool2d_use_reference(int on) { pool_reference_only = on; }

static int pool_use_reference(void) {
    if (pool_reference_only < 0) pool_reference_only = env_flag("SPECDYN_POOL_REFERENCE");
    return pool_reference_only;
}

/* Keep v as the window's maximum if it beats best: strictly greater keeps
 * the first maximum, and NaN propagates, as in PyTorch. */
static inline void max_update(float v, int index, float *best, int *best_index) {
    if (v > *best || isnan(v)) {
        *best = v;
        *best_index = index;
    }
}

/* One plane of the 2 × 2, stride-2, unpadded pooling of VGG and LeNet:
 * every window lies inside the plane, so the loop needs no bounds checks. */
static void max_pool_plane_2x2(const float *restrict xp, int w, int oh, int ow, float *restrict yp, int *restrict argmax) {
    for (int oy = 0; oy < oh; oy++) {
        int top = 2 * oy * w;
        for (int ox = 0; ox < ow; ox++) {
            int at = top + 2 * ox;
            float best = xp[at];
            int best_index = at;
            max_update(xp[at + 1], at + 1, &best, &best_index);
            max_update(xp[at + w], at + w, &best, &best_index);
            max_update(xp[at + w + 1], at + w + 1, &best, &best_index);
            yp[oy * ow + ox] = best;
            if (argmax) argmax[oy * ow + ox] = best_index;
        }
    }
}

Tensor *op_max_pool2d(Graph *g, Tensor *x, int kernel, int stride, int padding) {
    int needs = graph_needs_grad(g, x, NULL, NULL);
    Tensor *y = pool_output(g, x, kernel, stride, padding, "max_pool2d", needs);
    int h = x->shape[2], w = x->shape[3], oh = y->shape[2], ow = y->shape[3];
    long planes = (long)x->shape[0] * x->shape[1];
    /* argmax[p, oy, ox]: index within input plane p of the element that won. */
    int *argmax = needs ? arena_alloc(&g->arena, (size_t)y->size * sizeof(int)) : NULL;
    int fast = kernel == 2 && stride == 2 && padding == 0 && !pool_use_reference();
#pragma omp parallel for schedule(static) if (x->size > PARALLEL_MIN)
    for (long p = 0; p < planes; p++) {
        const float *xp = x->data + p * h * w;
        if (fast) {
            max_pool_plane_2x2(xp, w, oh, ow, y->data + p * oh * ow, argmax ? argmax + p * oh * ow : NULL);
            continue;
        }
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
