/* Finite-difference gradient checks of the image ops (conv2d, pooling,
 * batch norm, dropout), with the method and tolerances of test_grad.c: the
 * objective is L = Σ R ⊙ y in double precision for a fixed random R, the
 * analytic gradient comes from graph_backward_seeded(y, R), the reference is
 * the central difference with h = 1e-3 · max(1, |x|), and the tolerance is
 * rtol 1e-2 plus atol 2e-3 · max(1, max |g|). */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convnet.h"
#include "error.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

/* The case tables below list leading fields positionally and leave the rest zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define MAX_INPUTS 5

typedef struct {
    const char *name;
    int n_inputs;
    int ndim[MAX_INPUTS];
    int shape[MAX_INPUTS][TENSOR_MAX_DIMS];
    int no_grad[MAX_INPUTS];   /* 1: input receives no gradient (constant) */
    int positive[MAX_INPUTS];  /* 1: input drawn from [0.5, 1.5) (variances) */
    int distinct;              /* 1: input 0 is a permutation of values 0.01 apart (max pooling ties) */
    int eval;                  /* 1: run with g->training = 0 */
    int iarg[3];
    float farg;
} GradCase;

typedef Tensor *(*ForwardFn)(Graph *g, Tensor **in, const GradCase *c);

static Tensor *run_forward(Graph *g, ForwardFn fwd, Tensor **in, const GradCase *c) {
    g->training = !c->eval;
    rng_seed(&g->rng, 5, 6); /* dropout draws the same mask on every call */
    return fwd(g, in, c);
}

static double objective(Graph *g, ForwardFn fwd, Tensor **in, const GradCase *c, const float *r) {
    graph_reset(g);
    g->recording = 0;
    Tensor *y = run_forward(g, fwd, in, c);
    g->recording = 1;
    double total = 0.0;
    for (long i = 0; i < y->size; i++) total += (double)r[i] * (double)y->data[i];
    return total;
}

static void fill_inputs(Tensor **in, const GradCase *c, Rng *rng) {
    for (int k = 0; k < c->n_inputs; k++) {
        Tensor *t = in[k];
        for (long i = 0; i < t->size; i++) {
            float v = 2.0f * rng_uniform(rng) - 1.0f;
            t->data[i] = c->positive[k] ? 1.0f + 0.5f * v : v;
        }
        if (k == 0 && c->distinct) {
            int *perm = malloc((size_t)t->size * sizeof *perm);
            for (long i = 0; i < t->size; i++) perm[i] = (int)i;
            rng_shuffle(rng, perm, t->size);
            for (long i = 0; i < t->size; i++) t->data[i] = 0.01f * (float)perm[i] - 0.005f * (float)t->size;
            free(perm);
        }
    }
}

static void check_case(ForwardFn fwd, const GradCase *c, unsigned seed) {
    Rng rng;
    rng_seed(&rng, seed, 78);
    Arena keep;
    arena_init(&keep, 1 << 20);
    Tensor *in[MAX_INPUTS];
    for (int k = 0; k < c->n_inputs; k++) in[k] = tensor_new(&keep, c->ndim[k], c->shape[k], !c->no_grad[k]);
    fill_inputs(in, c, &rng);
    Graph g;
    graph_init(&g);
    g.recording = 0;
    long out_size = run_forward(&g, fwd, in, c)->size;
    float *r = tensor_new(&keep, 1, (int[]){(int)out_size}, 0)->data;
    for (long i = 0; i < out_size; i++) r[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    graph_reset(&g);
    g.recording = 1;
    Tensor *y = run_forward(&g, fwd, in, c);
    graph_backward_seeded(&g, y, r);

    for (int k = 0; k < c->n_inputs; k++) {
        if (c->no_grad[k]) continue;
        double gmax = 0.0;
        for (long i = 0; i < in[k]->size; i++) gmax = fmax(gmax, fabs((double)in[k]->grad[i]));
        double atol = 2e-3 * fmax(1.0, gmax);
        int failures = 0;
        for (long i = 0; i < in[k]->size; i++) {
            float saved = in[k]->data[i];
            float h = 1e-3f * fmaxf(1.0f, fabsf(saved));
            in[k]->data[i] = saved + h;
            double plus = objective(&g, fwd, in, c, r);
            in[k]->data[i] = saved - h;
            double minus = objective(&g, fwd, in, c, r);
            in[k]->data[i] = saved;
            double numeric = (plus - minus) / (2.0 * (double)h);
            double analytic = in[k]->grad[i];
            if (!test_close(analytic, numeric, 1e-2, atol) && failures++ < 3)
                EXPECT(0, "%s: d/d input %d [%ld]: backward %.6g, finite difference %.6g", c->name, k, i, analytic,
                       numeric);
        }
    }
    graph_free(&g);
    arena_free(&keep);
}

/* ---- forward wrappers ------------------------------------------------------ */

static Tensor *fwd_conv2d(Graph *g, Tensor **in, const GradCase *c) {
    return op_conv2d(g, in[0], in[1], c->n_inputs > 2 ? in[2] : NULL, c->iarg[0], c->iarg[1]);
}
static Tensor *fwd_max_pool(Graph *g, Tensor **in, const GradCase *c) {
    return op_max_pool2d(g, in[0], c->iarg[0], c->iarg[1], c->iarg[2]);
}
static Tensor *fwd_avg_pool(Graph *g, Tensor **in, const GradCase *c) {
    return op_avg_pool2d(g, in[0], c->iarg[0], c->iarg[1], c->iarg[2]);
}
static Tensor *fwd_global_avg_pool(Graph *g, Tensor **in, const GradCase *c) {
    (void)c;
    return op_global_avg_pool(g, in[0]);
}
/* Inputs: x, gamma, beta and, when present, running mean and variance. */
static Tensor *fwd_batchnorm(Graph *g, Tensor **in, const GradCase *c) {
    Tensor *rm = c->n_inputs > 3 ? in[3] : NULL, *rv = c->n_inputs > 4 ? in[4] : NULL;
    return op_batchnorm(g, in[0], in[1], in[2], rm, rv, 0.1f, 1e-5f);
}
static Tensor *fwd_dropout(Graph *g, Tensor **in, const GradCase *c) { return op_dropout(g, in[0], c->farg); }

/* ---- cases ------------------------------------------------------------------ */

static void grad_conv2d(void) {
    check_case(fwd_conv2d, &(GradCase){"conv2d 3x3 pad 1", 3, {4, 4, 1}, {{2, 3, 5, 4}, {4, 3, 3, 3}, {4}}, .iarg = {1, 1}}, 1);
    check_case(fwd_conv2d,
               &(GradCase){"conv2d stride 2 non-square kernel", 3, {4, 4, 1}, {{2, 2, 7, 6}, {3, 2, 3, 2}, {3}}, .iarg = {2, 0}},
               2);
    check_case(fwd_conv2d, &(GradCase){"conv2d batch 1 stride 2 pad 2", 3, {4, 4, 1}, {{1, 2, 5, 5}, {2, 2, 3, 3}, {2}},
                                       .iarg = {2, 2}},
               3);
    check_case(fwd_conv2d, &(GradCase){"conv2d 1x1 no bias", 2, {4, 4}, {{3, 4, 3, 2}, {5, 4, 1, 1}}, .iarg = {1, 0}}, 4);
    check_case(fwd_conv2d, &(GradCase){"conv2d batch 5", 3, {4, 4, 1}, {{5, 1, 4, 4}, {2, 1, 3, 3}, {2}}, .iarg = {1, 1}}, 5);
}

static void grad_pooling(void) {
    check_case(fwd_max_pool, &(GradCase){"max_pool2d 2x2", 1, {4}, {{2, 3, 4, 6}}, .distinct = 1, .iarg = {2, 2, 0}}, 6);
    check_case(fwd_max_pool,
               &(GradCase){"max_pool2d overlapping pad 1", 1, {4}, {{1, 2, 5, 4}}, .distinct = 1, .iarg = {3, 2, 1}}, 7);
    check_case(fwd_avg_pool, &(GradCase){"avg_pool2d 2x2", 1, {4}, {{2, 2, 4, 5}}, .iarg = {2, 2, 0}}, 8);
    check_case(fwd_avg_pool, &(GradCase){"avg_pool2d 3x3 pad 1", 1, {4}, {{1, 3, 5, 6}}, .iarg = {3, 2, 1}}, 9);
    check_case(fwd_global_avg_pool, &(GradCase){"global_avg_pool", 1, {4}, {{3, 2, 3, 5}}}, 10);
}

static void grad_batchnorm(void) {
    check_case(fwd_batchnorm, &(GradCase){"batchnorm 4-D training", 3, {4, 1, 1}, {{3, 2, 3, 4}, {2}, {2}}}, 11);
    check_case(fwd_batchnorm, &(GradCase){"batchnorm 2-D training", 3, {2, 1, 1}, {{5, 3}, {3}, {3}}}, 12);
    check_case(fwd_batchnorm, &(GradCase){"batchnorm batch 1 training", 5, {4, 1, 1, 1, 1},
                                          {{1, 2, 2, 3}, {2}, {2}, {2}, {2}}, .no_grad = {0, 0, 0, 1, 1},
                                          .positive = {0, 0, 0, 0, 1}},
               13);
    check_case(fwd_batchnorm, &(GradCase){"batchnorm 4-D evaluation", 5, {4, 1, 1, 1, 1},
                                          {{2, 3, 2, 2}, {3}, {3}, {3}, {3}}, .no_grad = {0, 0, 0, 1, 1},
                                          .positive = {0, 0, 0, 0, 1}, .eval = 1},
               14);
    check_case(fwd_batchnorm, &(GradCase){"batchnorm 2-D evaluation", 5, {2, 1, 1, 1, 1},
                                          {{4, 2}, {2}, {2}, {2}, {2}}, .no_grad = {0, 0, 0, 1, 1},
                                          .positive = {0, 0, 0, 0, 1}, .eval = 1},
               15);
}

static void grad_dropout(void) {
    check_case(fwd_dropout, &(GradCase){"dropout p 0.3", 1, {2}, {{6, 7}}, .farg = 0.3f}, 16);
    check_case(fwd_dropout, &(GradCase){"dropout 4-D p 0.5", 1, {4}, {{2, 3, 2, 2}}, .farg = 0.5f}, 17);
}

/* conv2d's chunked im2col-GEMM path, and oneDNN, against the definition,
 * evaluated with direct loops in double precision: y, dx, dw and db for a
 * random upstream gradient, within 1e-4 relative plus 1e-5 of the largest
 * magnitude. The shapes make the GEMM path cut the batch into chunks run by
 * several threads, including a last chunk of one sample. They also make it
 * run one chunk with OpenBLAS threading the GEMM, and cover stride 2 with
 * odd sizes and a 5 × 5 kernel. */
typedef struct {
    int n, c, h, w, o, k, stride, padding;
} ConvShape;

static double max_abs(const float *v, long n) {
    double m = 0.0;
    for (long i = 0; i < n; i++) m = fmax(m, fabs((double)v[i]));
    return m;
}

static int count_far(const float *got, const double *want, long n) {
    double scale = 0.0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    int far = 0;
    for (long i = 0; i < n; i++) far += !test_close((double)got[i], want[i], 1e-4, 1e-5 * scale);
    return far;
}

static void check_conv_reference(const ConvShape *cs, unsigned seed, const char *path) {
    Rng rng;
    rng_seed(&rng, seed, 91);
    Arena keep;
    arena_init(&keep, 1 << 20);
    int oh = (cs->h + 2 * cs->padding - cs->k) / cs->stride + 1, ow = (cs->w + 2 * cs->padding - cs->k) / cs->stride + 1;
    Tensor *x = tensor_new(&keep, 4, (int[]){cs->n, cs->c, cs->h, cs->w}, 1);
    Tensor *w = tensor_new(&keep, 4, (int[]){cs->o, cs->c, cs->k, cs->k}, 1);
    Tensor *b = tensor_new(&keep, 1, (int[]){cs->o}, 1);
    Tensor *tensors[3] = {x, w, b};
    for (int t = 0; t < 3; t++)
        for (long i = 0; i < tensors[t]->size; i++) tensors[t]->data[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    long y_size = (long)cs->n * cs->o * oh * ow;
    float *dy = sd_malloc((size_t)y_size * sizeof(float));
    for (long i = 0; i < y_size; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    Graph g;
    graph_init(&g);
    g.recording = 1;
    Tensor *y = op_conv2d(&g, x, w, b, cs->stride, cs->padding);
    graph_backward_seeded(&g, y, dy);

    double *ry = sd_calloc((size_t)y_size, sizeof(double)), *rdx = sd_calloc((size_t)x->size, sizeof(double));
    double *rdw = sd_calloc((size_t)w->size, sizeof(double)), *rdb = sd_calloc((size_t)b->size, sizeof(double));
    for (int s = 0; s < cs->n; s++)
        for (int oc = 0; oc < cs->o; oc++)
            for (int oy = 0; oy < oh; oy++)
                for (int ox = 0; ox < ow; ox++) {
                    long yi = (((long)s * cs->o + oc) * oh + oy) * ow + ox;
                    double acc = (double)b->data[oc];
                    rdb[oc] += (double)dy[yi];
                    for (int c = 0; c < cs->c; c++)
                        for (int i = 0; i < cs->k; i++)
                            for (int j = 0; j < cs->k; j++) {
                                int iy = oy * cs->stride - cs->padding + i, ix = ox * cs->stride - cs->padding + j;
                                if (iy < 0 || iy >= cs->h || ix < 0 || ix >= cs->w) continue;
                                long xi = (((long)s * cs->c + c) * cs->h + iy) * cs->w + ix;
                                long wi = (((long)oc * cs->c + c) * cs->k + i) * cs->k + j;
                                acc += (double)w->data[wi] * (double)x->data[xi];
                                rdx[xi] += (double)w->data[wi] * (double)dy[yi];
                                rdw[wi] += (double)x->data[xi] * (double)dy[yi];
                            }
                    ry[yi] = acc;
                }
    char label[128];
    snprintf(label, sizeof label, "%s: n %d c %d %dx%d o %d k %d stride %d padding %d", path, cs->n, cs->c, cs->h, cs->w,
             cs->o, cs->k, cs->stride, cs->padding);
    int far_y = count_far(y->data, ry, y_size), far_dx = count_far(x->grad, rdx, x->size);
    int far_dw = count_far(w->grad, rdw, w->size), far_db = count_far(b->grad, rdb, b->size);
    EXPECT(far_y == 0 && far_dx == 0 && far_dw == 0 && far_db == 0,
           "%s: elements off the direct loops: y %d, dx %d, dw %d, db %d (max |y| %g)", label, far_y, far_dx, far_dw,
           far_db, max_abs(y->data, y_size));
    free(ry);
    free(rdx);
    free(rdw);
    free(rdb);
    free(dy);
    graph_free(&g);
    arena_free(&keep);
}

static void conv2d_matches_direct_loops(void) {
    /* Two threads, so that chunks are spread over workers even when OMP_NUM_THREADS is unset. */
    int threads = omp_get_max_threads();
    omp_set_num_threads(2);
    const ConvShape shapes[] = {
        {40, 64, 8, 8, 8, 3, 1, 1},   /* several chunks, one per thread block */
        {7, 4, 64, 64, 6, 3, 1, 1},   /* chunks of two samples and a last one of one */
        {3, 128, 4, 4, 16, 3, 1, 1},  /* a single chunk: OpenBLAS threads the GEMM */
        {9, 5, 11, 9, 7, 3, 2, 1},    /* stride 2, odd sizes */
        {6, 3, 12, 12, 4, 5, 1, 0},   /* LeNet's 5 × 5 without padding */
        {5, 6, 7, 7, 3, 1, 2, 0},     /* ResNet's 1 × 1 stride-2 shortcut */
        {3, 2, 1, 1, 2, 7, 2, 3},     /* a kernel wider than the image */
    };
    static const char *const paths[2] = {"oneDNN", "im2col-GEMM"};
    for (int reference = 1; reference >= 0; reference--) {
        conv2d_use_reference(reference);
        for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++)
            check_conv_reference(&shapes[i], 30 + (unsigned)i, paths[reference]);
    }
    conv2d_use_reference(0);
    omp_set_num_threads(threads);
}

/* max_pool2d's 2 × 2 stride-2 loop against the general window loop: y and
 * dx must agree bit for bit, since both compare the same values in the
 * same order. The input has ties (values repeat), a NaN, and odd sizes
 * whose last row and column no window reaches. */
static void run_max_pool(Tensor *x, const float *dy, int reference, float *y_out) {
    max_pool2d_use_reference(reference);
    Graph g;
    graph_init(&g);
    Tensor *y = op_max_pool2d(&g, x, 2, 2, 0);
    memcpy(y_out, y->data, (size_t)y->size * sizeof(float));
    graph_backward_seeded(&g, y, dy);
    graph_free(&g);
    max_pool2d_use_reference(0);
}

static void max_pool_2x2_matches_general(void) {
    Rng rng;
    rng_seed(&rng, 8, 3);
    const int shapes[][4] = {{4, 3, 8, 6}, {2, 5, 5, 7}, {128, 2, 2, 2}};
    for (size_t k = 0; k < sizeof shapes / sizeof shapes[0]; k++) {
        Arena keep;
        arena_init(&keep, 1 << 20);
        Tensor *x = tensor_new(&keep, 4, shapes[k], 1);
        /* Eight levels, so windows often hold equal maxima. */
        for (long i = 0; i < x->size; i++) x->data[i] = (float)(int)(8.0f * rng_uniform(&rng)) - 4.0f;
        x->data[x->size / 2] = NAN;
        long y_size = (long)shapes[k][0] * shapes[k][1] * (shapes[k][2] / 2) * (shapes[k][3] / 2);
        float *dy = sd_malloc((size_t)y_size * sizeof(float)), *y_fast = sd_malloc((size_t)y_size * sizeof(float));
        float *y_general = sd_malloc((size_t)y_size * sizeof(float)), *dx_fast = sd_malloc((size_t)x->size * sizeof(float));
        for (long i = 0; i < y_size; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;
        run_max_pool(x, dy, 0, y_fast);
        memcpy(dx_fast, x->grad, (size_t)x->size * sizeof(float));
        x->grad_unset[0] = 1;
        run_max_pool(x, dy, 1, y_general);
        /* memcmp: NaN compares unequal to itself with ==, but its bits repeat. */
        EXPECT(memcmp(y_fast, y_general, (size_t)y_size * sizeof(float)) == 0, "shape %zu: y differs", k);
        EXPECT(memcmp(dx_fast, x->grad, (size_t)x->size * sizeof(float)) == 0, "shape %zu: dx differs", k);
        free(dy);
        free(y_fast);
        free(y_general);
        free(dx_fast);
        arena_free(&keep);
    }
}

/* Batch norm in training mode against the definition evaluated with
 * direct loops in double precision: y, the running statistics, dx, dgamma
 * and dbeta within 1e-5 of each tensor's max magnitude. The row lengths
 * (H·W = 1, 3, 16, 37 and 1024) cover the vector lanes of the channel sums
 * and their remainders. */
typedef struct {
    int ndim, n, c, h, w;
} NormShape;

static int far_from(const float *got, const double *want, long n, double tolerance) {
    double scale = 0.0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs(want[i]));
    int far = 0;
    for (long i = 0; i < n; i++) far += !(fabs((double)got[i] - want[i]) <= tolerance * scale);
    return far;
}

static void check_batchnorm_reference(const NormShape *ns, unsigned seed) {
    Rng rng;
    rng_seed(&rng, seed, 5);
    Arena keep;
    arena_init(&keep, 1 << 20);
    int shape[4] = {ns->n, ns->c, ns->h, ns->w};
    Tensor *x = tensor_new(&keep, ns->ndim, shape, 1);
    Tensor *gamma = tensor_new(&keep, 1, &ns->c, 1), *beta = tensor_new(&keep, 1, &ns->c, 1);
    Tensor *rm = tensor_new(&keep, 1, &ns->c, 0), *rv = tensor_new(&keep, 1, &ns->c, 0);
    /* An offset of 3 makes the mean large against the spread, as after a ReLU. */
    for (long i = 0; i < x->size; i++) x->data[i] = 3.0f + 2.0f * rng_uniform(&rng) - 1.0f;
    for (int ch = 0; ch < ns->c; ch++) {
        gamma->data[ch] = 0.5f + rng_uniform(&rng);
        beta->data[ch] = rng_uniform(&rng) - 0.5f;
        rm->data[ch] = 0.1f;
        rv->data[ch] = 1.0f;
    }
    float *dy = sd_malloc((size_t)x->size * sizeof(float));
    for (long i = 0; i < x->size; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    Graph g;
    graph_init(&g);
    Tensor *y = op_batchnorm(&g, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
    graph_backward_seeded(&g, y, dy);

    long s = ns->ndim == 4 ? (long)ns->h * ns->w : 1, m = ns->n * s;
    double *ry = sd_malloc((size_t)x->size * sizeof(double)), *rdx = sd_malloc((size_t)x->size * sizeof(double));
    double *rdgamma = sd_calloc((size_t)ns->c, sizeof(double)), *rdbeta = sd_calloc((size_t)ns->c, sizeof(double));
    double *rrm = sd_malloc((size_t)ns->c * sizeof(double)), *rrv = sd_malloc((size_t)ns->c * sizeof(double));
    for (int ch = 0; ch < ns->c; ch++) {
        double mean = 0.0, var = 0.0;
        for (int b = 0; b < ns->n; b++)
            for (long i = 0; i < s; i++) mean += (double)x->data[((long)b * ns->c + ch) * s + i];
        mean /= (double)m;
        for (int b = 0; b < ns->n; b++)
            for (long i = 0; i < s; i++) var += pow((double)x->data[((long)b * ns->c + ch) * s + i] - mean, 2);
        rrm[ch] = 0.9 * 0.1 + 0.1 * mean;
        rrv[ch] = 0.9 * 1.0 + 0.1 * var / (double)(m - 1);
        var /= (double)m;
        double inv = 1.0 / sqrt(var + 1e-5), sum_dy = 0.0, sum_dy_xhat = 0.0;
        for (int b = 0; b < ns->n; b++)
            for (long i = 0; i < s; i++) {
                long at = ((long)b * ns->c + ch) * s + i;
                double xhat = ((double)x->data[at] - mean) * inv;
                ry[at] = xhat * (double)gamma->data[ch] + (double)beta->data[ch];
                sum_dy += (double)dy[at];
                sum_dy_xhat += (double)dy[at] * xhat;
            }
        rdgamma[ch] = sum_dy_xhat;
        rdbeta[ch] = sum_dy;
        for (int b = 0; b < ns->n; b++)
            for (long i = 0; i < s; i++) {
                long at = ((long)b * ns->c + ch) * s + i;
                double xhat = ((double)x->data[at] - mean) * inv;
                rdx[at] = (double)gamma->data[ch] * inv * ((double)dy[at] - sum_dy / (double)m - xhat * sum_dy_xhat / (double)m);
            }
    }
    char label[64];
    snprintf(label, sizeof label, "%d-D n %d c %d %dx%d", ns->ndim, ns->n, ns->c, ns->h, ns->w);
    EXPECT(far_from(y->data, ry, x->size, 1e-5) == 0, "%s: y off the direct loops", label);
    EXPECT(far_from(x->grad, rdx, x->size, 1e-5) == 0, "%s: dx off the direct loops", label);
    EXPECT(far_from(gamma->grad, rdgamma, ns->c, 1e-5) == 0, "%s: dgamma off the direct loops", label);
    EXPECT(far_from(beta->grad, rdbeta, ns->c, 1e-5) == 0, "%s: dbeta off the direct loops", label);
    EXPECT(far_from(rm->data, rrm, ns->c, 1e-5) == 0, "%s: running mean off the direct loops", label);
    EXPECT(far_from(rv->data, rrv, ns->c, 1e-5) == 0, "%s: running var off the direct loops", label);
    free(ry);
    free(rdx);
    free(rdgamma);
    free(rdbeta);
    free(rrm);
    free(rrv);
    free(dy);
    graph_free(&g);
    arena_free(&keep);
}

static void batchnorm_matches_direct_loops(void) {
    const NormShape shapes[] = {
        {2, 9, 5, 1, 1},      /* [N, C] */
        {4, 6, 3, 1, 3},      /* rows shorter than the lanes */
        {4, 5, 4, 4, 4},      /* one full set of lanes per row */
        {4, 3, 2, 37, 1},     /* two sets and a remainder */
        {4, 16, 16, 32, 32},  /* VGG's first block at batch 16 */
    };
    for (size_t i = 0; i < sizeof shapes / sizeof shapes[0]; i++) check_batchnorm_reference(&shapes[i], 60 + (unsigned)i);
}

static void dropout_semantics(void) {
    Graph g;
    graph_init(&g);
    g.recording = 0;
    Tensor *x = tensor_new(&g.arena, 2, (int[]){100, 100}, 0);
    for (long i = 0; i < x->size; i++) x->data[i] = 1.0f;
    rng_seed(&g.rng, 1, 2);
    Tensor *y = op_dropout(&g, x, 0.25f);
    long zeros = 0;
    int bad_scale = 0;
    for (long i = 0; i < y->size; i++) {
        if (y->data[i] == 0.0f)
            zeros++;
        else if (fabsf(y->data[i] - 1.0f / 0.75f) > 1e-6f)
            bad_scale = 1;
    }
    /* 10 000 draws with p = 0.25: the count of zeros has standard deviation about 43. */
    EXPECT(zeros > 2300 && zeros < 2700, "%ld of 10000 elements dropped with p = 0.25", zeros);
    EXPECT(!bad_scale, "kept elements are not scaled by 1 / (1 - p)");
    rng_seed(&g.rng, 1, 2);
    Tensor *again = op_dropout(&g, x, 0.25f);
    EXPECT(memcmp(again->data, y->data, (size_t)y->size * sizeof(float)) == 0, "reseeded dropout draws another mask");
    g.training = 0;
    EXPECT(op_dropout(&g, x, 0.25f) == x, "dropout in evaluation is not the identity");
    g.training = 1;
    Tensor *all = op_dropout(&g, x, 1.0f);
    int nonzero = 0;
    for (long i = 0; i < all->size; i++) nonzero |= all->data[i] != 0.0f;
    EXPECT(!nonzero, "dropout with p = 1 keeps elements");
    graph_free(&g);
}

static void batchnorm_running_update(void) {
    /* One channel holding 1, 2, 3, 4: batch mean 2.5, biased variance 1.25, unbiased 5/3. */
    Graph g;
    graph_init(&g);
    g.recording = 0;
    Tensor *x = tensor_new(&g.arena, 2, (int[]){4, 1}, 0);
    Tensor *gamma = tensor_new(&g.arena, 1, (int[]){1}, 0), *beta = tensor_new(&g.arena, 1, (int[]){1}, 0);
    Tensor *rm = tensor_new(&g.arena, 1, (int[]){1}, 0), *rv = tensor_new(&g.arena, 1, (int[]){1}, 0);
    for (int i = 0; i < 4; i++) x->data[i] = (float)(i + 1);
    gamma->data[0] = 1.0f;
    beta->data[0] = 0.0f;
    rm->data[0] = 0.0f;
    rv->data[0] = 1.0f;
    Tensor *y = op_batchnorm(&g, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
    EXPECT(test_close(y->data[0], -1.5 / sqrt(1.25 + 1e-5), 1e-6, 1e-6), "normalised first element %g", (double)y->data[0]);
    EXPECT(test_close(rm->data[0], 0.25, 1e-6, 1e-7), "running mean %g, expected 0.25", (double)rm->data[0]);
    EXPECT(test_close(rv->data[0], 0.9 + 0.1 * 5.0 / 3.0, 1e-6, 1e-7), "running var %g, expected 1.0667",
           (double)rv->data[0]);
    g.training = 0;
    float before = rm->data[0];
    y = op_batchnorm(&g, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
    EXPECT(rm->data[0] == before, "evaluation changed the running mean");
    EXPECT(test_close(y->data[0], (1.0 - 0.25) / sqrt(0.9 + 0.1 * 5.0 / 3.0 + 1e-5), 1e-6, 1e-6),
           "evaluation output %g", (double)y->data[0]);

    /* With bn_average_count = 1, 2, 3 the running statistics become the plain
     * average over three batches (batch means 2.5, 4.5, 6.5), whatever the momentum. */
    g.training = 1;
    for (int batch = 0; batch < 3; batch++) {
        for (int i = 0; i < 4; i++) x->data[i] = (float)(i + 1 + 2 * batch);
        g.bn_average_count = batch + 1;
        op_batchnorm(&g, x, gamma, beta, rm, rv, 0.1f, 1e-5f);
    }
    g.bn_average_count = 0;
    EXPECT(test_close(rm->data[0], 4.5, 1e-6, 1e-6), "averaged running mean %g, expected 4.5", (double)rm->data[0]);
    EXPECT(test_close(rv->data[0], 5.0 / 3.0, 1e-6, 1e-6), "averaged running var %g, expected 5/3",
           (double)rv->data[0]);
    graph_free(&g);
}

/* ---- whole models -------------------------------------------------------------- */

/* Finite differences on about 40 elements of every trainable parameter, in
 * training mode (batch statistics). An element whose one-sided differences
 * disagree sits on a ReLU or max-pool kink within ±h and is skipped; at most
 * a tenth of the samples may be skipped.
 * NOTE: vgg11 and resnet20 are not checked this way: with batch norm over 8
 * to 16 values per channel, float32 rounding dominates the differences at
 * h = 1e-3 and 1e-4 (a fifth of the one-sided pairs disagree). Their layers
 * are covered op by op here and by the PyTorch VGG block in test_golden_conv.c. */
typedef struct {
    ConvNet net;
    Tensor *x;   /* [N, C, S, S] images, in a long-lived arena */
} TinyNet;

static double model_objective(Graph *g, TinyNet *m, const float *r) {
    graph_reset(g);
    g->recording = 0;
    Tensor *y = convnet_forward(&m->net, g, m->x);
    g->recording = 1;
    double total = 0.0;
    for (long i = 0; i < y->size; i++) total += (double)r[i] * (double)y->data[i];
    return total;
}

static void check_convnet(const ConvNetConfig *cfg, int batch, float rel_step) {
    ParamStore *ps = calloc(1, sizeof *ps);
    TinyNet m;
    Rng rng;
    rng_seed(&rng, 21, 1);
    char err[256];
    EXPECT(convnet_init(&m.net, cfg, ps, &rng, err, sizeof err) == 0, "%s: %s", cfg->arch, err);
    Arena keep;
    arena_init(&keep, 1 << 20);
    m.x = tensor_new(&keep, 4, (int[]){batch, cfg->channels, cfg->image_size, cfg->image_size}, 0);
    for (long i = 0; i < m.x->size; i++) m.x->data[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    Graph g;
    graph_init(&g);
    params_zero_grad(ps);
    Tensor *y = convnet_forward(&m.net, &g, m.x);
    EXPECT(y->ndim == 2 && y->shape[0] == batch && y->shape[1] == cfg->classes, "%s: logits shape", cfg->arch);
    float *r = malloc((size_t)y->size * sizeof(float));
    for (long i = 0; i < y->size; i++) r[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    graph_backward_seeded(&g, y, r);
    long sampled = 0, skipped = 0;
    for (int k = 0; k < ps->count; k++) {
        Param *p = &ps->params[k];
        if (!p->trainable) continue;
        double gmax = 0.0;
        for (long i = 0; i < p->t.size; i++) gmax = fmax(gmax, fabs((double)p->t.grad[i]));
        long stride = p->t.size > 40 ? p->t.size / 40 : 1;
        int failures = 0;
        for (long i = 0; i < p->t.size; i += stride) {
            float saved = p->t.data[i];
            float h = rel_step * fmaxf(1.0f, fabsf(saved));
            double center = model_objective(&g, &m, r);
            p->t.data[i] = saved + h;
            double plus = model_objective(&g, &m, r);
            p->t.data[i] = saved - h;
            double minus = model_objective(&g, &m, r);
            p->t.data[i] = saved;
            sampled++;
            double forward = (plus - center) / (double)h, backward = (center - minus) / (double)h;
            if (!test_close(forward, backward, 2e-2, 2e-3 * fmax(1.0, gmax))) {
                skipped++;
                continue;
            }
            double numeric = (plus - minus) / (2.0 * (double)h);
            if (!test_close(p->t.grad[i], numeric, 1e-2, 2e-3 * fmax(1.0, gmax)) && failures++ < 3)
                EXPECT(0, "%s: %s[%ld]: backward %.6g, finite difference %.6g", cfg->arch, p->name, i,
                       (double)p->t.grad[i], numeric);
        }
    }
    EXPECT(skipped * 10 <= sampled, "%s: %ld of %ld samples skipped at kinks", cfg->arch, skipped, sampled);
    free(r);
    graph_free(&g);
    arena_free(&keep);
    convnet_free(&m.net);
    params_free(ps);
    free(ps);
}

static void grad_lenet(void) {
    check_convnet(&(ConvNetConfig){.arch = "lenet", .channels = 1, .image_size = 12, .classes = 3, .width = 0.5}, 3, 1e-3f);
}

/* Initialise net from seed 3 and run one forward and backward of the
 * cross-entropy on a random batch whose sample i has label i mod classes.
 * Returns the parameter store, which the caller frees with the net and g. */
static ParamStore *backward_on_random_batch(const ConvNetConfig *cfg, int batch, ConvNet *net, Graph *g) {
    ParamStore *ps = calloc(1, sizeof *ps);
    Rng rng;
    rng_seed(&rng, 3, 1);
    char err[256];
    EXPECT(convnet_init(net, cfg, ps, &rng, err, sizeof err) == 0, "%s: %s", cfg->arch, err);
    graph_init(g);
    Tensor *x = tensor_new(&g->arena, 4, (int[]){batch, cfg->channels, cfg->image_size, cfg->image_size}, 0);
    for (long i = 0; i < x->size; i++) x->data[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    int *labels = arena_alloc(&g->arena, (size_t)batch * sizeof(int));
    for (int i = 0; i < batch; i++) labels[i] = i % cfg->classes;
    params_zero_grad(ps);
    graph_backward(g, op_cross_entropy(g, convnet_forward(net, g, x), labels));
    return ps;
}

/* Every trainable parameter of a deep net gets a finite gradient, nonzero
 * except conv biases followed by batch norm (the batch mean removes them). */
static void check_gradients_reach(const ConvNetConfig *cfg, int batch) {
    ConvNet net;
    Graph g;
    ParamStore *ps = backward_on_random_batch(cfg, batch, &net, &g);
    for (int k = 0; k < ps->count; k++) {
        Param *p = &ps->params[k];
        double norm = 0.0;
        for (long i = 0; i < p->t.size; i++) norm += (double)p->t.grad[i] * (double)p->t.grad[i];
        int bias_before_bn = p->role == ROLE_BIAS && strncmp(p->name, "features.", 9) == 0;
        EXPECT(isfinite(norm), "%s: gradient of %s is not finite", cfg->arch, p->name);
        if (p->trainable && !bias_before_bn) EXPECT(norm > 0.0, "%s: no gradient reaches %s", cfg->arch, p->name);
        if (!p->trainable) EXPECT(norm == 0.0, "%s: buffer %s has a gradient", cfg->arch, p->name);
    }
    graph_free(&g);
    convnet_free(&net);
    params_free(ps);
    free(ps);
}

static void gradients_reach_deep_nets(void) {
    check_gradients_reach(&(ConvNetConfig){.arch = "vgg11", .channels = 3, .image_size = 32, .classes = 3, .width = 1.0 / 16}, 4);
    check_gradients_reach(&(ConvNetConfig){.arch = "resnet20", .channels = 2, .image_size = 8, .classes = 3, .width = 0.25}, 4);
}

typedef struct {
    int count;
    char names[128][PARAM_NAME_MAX];
    long sizes[128];
    int ndims[128];
    float *grads[128];
} NetGradients;

/* Fill out with the gradient of every parameter of a freshly initialised net,
 * from one forward and backward on a fixed random batch. */
static void net_gradients(const ConvNetConfig *cfg, int batch, NetGradients *out) {
    ConvNet net;
    Graph g;
    ParamStore *ps = backward_on_random_batch(cfg, batch, &net, &g);
    out->count = 0;
    for (int k = 0; k < ps->count && k < 128; k++) {
        Param *p = &ps->params[k];
        if (!p->trainable) continue;
        int i = out->count++;
        snprintf(out->names[i], sizeof out->names[i], "%s", p->name);
        out->sizes[i] = p->t.size;
        out->ndims[i] = p->t.ndim;
        out->grads[i] = malloc((size_t)p->t.size * sizeof(float));
        memcpy(out->grads[i], p->t.grad, (size_t)p->t.size * sizeof(float));
    }
    graph_free(&g);
    convnet_free(&net);
    params_free(ps);
    free(ps);
}

/* The whole VGG-16 (width 0.25) backward through oneDNN's conv2d and the 2 × 2
 * max-pool loop agrees with the reference paths within 1e-4 of each
 * parameter's largest gradient (measured: at most 1.2e-5). This catches
 * errors the per-op tests cannot, such as state shared between layers.
 * NOTE: a ReLU input or a max-pool tie within rounding distance of its kink
 * can take the other branch on one path and change the gradients below it
 * by far more. Batch 16 with these seeds has none (batch 128 has one), so a
 * failure here after a library update may be such a flip rather than a bug. */
static void vgg_paths_agree(void) {
    ConvNetConfig cfg = {.arch = "vgg16", .channels = 1, .image_size = 32, .classes = 10, .width = 0.25};
    static NetGradients fast, ref;
    net_gradients(&cfg, 16, &fast);
    conv2d_use_reference(1);
    max_pool2d_use_reference(1);
    net_gradients(&cfg, 16, &ref);
    conv2d_use_reference(0);
    max_pool2d_use_reference(0);
    EXPECT(fast.count == ref.count && fast.count > 0, "%d against %d parameters", fast.count, ref.count);
    for (int k = 0; k < fast.count && k < ref.count; k++) {
        /* Every conv bias in VGG-BN is followed by batch norm, so its true gradient is 0 and its values are rounding noise. */
        int bias_before_bn = k > 0 && ref.ndims[k - 1] == 4 && ref.ndims[k] == 1;
        double scale = 0.0, diff = 0.0;
        for (long i = 0; i < ref.sizes[k]; i++) {
            scale = fmax(scale, fabs((double)ref.grads[k][i]));
            diff = fmax(diff, fabs((double)fast.grads[k][i] - (double)ref.grads[k][i]));
        }
        if (!bias_before_bn)
            EXPECT(diff <= 1e-4 * scale, "%s: max |oneDNN − reference| %.3g, max |reference| %.3g", ref.names[k], diff,
                   scale);
        free(fast.grads[k]);
        free(ref.grads[k]);
    }
}

static void grad_image_mlp(void) {
    check_convnet(&(ConvNetConfig){.arch = "mlp", .channels = 1, .image_size = 4, .classes = 3, .hidden = 6, .depth = 2},
                  3, 1e-3f);
}

static void convnet_names_and_pairs(void) {
    ParamStore *ps = calloc(1, sizeof *ps);
    ConvNet net;
    Rng rng;
    rng_seed(&rng, 1, 1);
    char err[256];
    int rc = convnet_init(&net, &(ConvNetConfig){.arch = "vgg11", .channels = 3, .image_size = 32, .classes = 10, .width = 0.125},
                          ps, &rng, err, sizeof err);
    EXPECT(rc == 0, "vgg11: %s", err);
    Param *bn_mean = params_find(ps, "features.1.running_mean");
    EXPECT(bn_mean && !bn_mean->trainable, "features.1.running_mean is missing or trainable");
    EXPECT(params_find(ps, "features.4.weight") && params_find(ps, "features.4.weight")->t.ndim == 4,
           "second VGG-11 conv is not features.4.weight (after conv, BN, ReLU, pool)");
    Param *cls = params_find(ps, "classifier.weight");
    EXPECT(cls && cls->t.shape[1] == 64 && cls->role == ROLE_OUTPUT, "classifier.weight is not the [10, 512/8] output layer");
    LayerPair pairs[LAYER_PAIRS_MAX];
    int n = convnet_pairs(&net, pairs, LAYER_PAIRS_MAX);
    EXPECT(n == 1, "vgg11 at 32 pixels has %d pairs, expected only last conv -> classifier", n);
    if (n == 1)
        EXPECT(strcmp(pairs[0].from, "features.25.weight") == 0 && strcmp(pairs[0].to, "classifier.weight") == 0,
               "pair %s -> %s", pairs[0].from, pairs[0].to);
    convnet_free(&net);
    params_free(ps);

    rc = convnet_init(&net, &(ConvNetConfig){.arch = "resnet20", .channels = 1, .image_size = 28, .classes = 10, .width = 1},
                      ps, &rng, err, sizeof err);
    EXPECT(rc == 0, "resnet20: %s", err);
    EXPECT(params_find(ps, "layer2.0.shortcut.0.weight") && !params_find(ps, "layer1.0.shortcut.0.weight"),
           "projection shortcuts only where the shape changes");
    long trainable = 0;
    for (int i = 0; i < ps->count; i++) trainable += ps->params[i].trainable ? ps->params[i].t.size : 0;
    EXPECT(trainable == ps->total_size, "total_size %ld counts buffers (trainable %ld)", ps->total_size, trainable);
    convnet_free(&net);
    params_free(ps);

    rc = convnet_init(&net, &(ConvNetConfig){.arch = "vgg16", .channels = 1, .image_size = 28, .classes = 10, .width = 1},
                      ps, &rng, err, sizeof err);
    EXPECT(rc != 0 && strstr(err, "32"), "vgg16 on 28-pixel images: '%s'", err);
    convnet_free(&net);
    params_free(ps);
    free(ps);
}

const TestCase grad_conv_tests[] = {
    {"grad conv2d", grad_conv2d},
    {"conv2d matches direct loops", conv2d_matches_direct_loops},
    {"max_pool2d 2x2 matches general loop", max_pool_2x2_matches_general},
    {"batchnorm matches direct loops", batchnorm_matches_direct_loops},
    {"grad pooling", grad_pooling},
    {"grad batchnorm", grad_batchnorm},
    {"grad dropout", grad_dropout},
    {"dropout semantics", dropout_semantics},
    {"batchnorm running update", batchnorm_running_update},
    {"grad lenet", grad_lenet},
    {"gradients reach deep nets", gradients_reach_deep_nets},
    {"vgg paths agree", vgg_paths_agree},
    {"grad image mlp", grad_image_mlp},
    {"convnet names and pairs", convnet_names_and_pairs},
    {NULL, NULL},
};
