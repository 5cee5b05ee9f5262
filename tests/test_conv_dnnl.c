/* conv2d through oneDNN against the im2col-GEMM reference path: y, dx, dw
 * and db on the same inputs, and the bitwise repeatability of oneDNN's
 * results. Agreement means |oneDNN − reference| <= 1e-4 · max |reference|
 * for every element of a tensor. Direct convolution sums the same products
 * as the reference in another order and stays within about 6e-7 · max.
 * Winograd (3 × 3 layers with 16 or more channels) stays within about
 * 2e-6 · max. */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conv_dnnl.h"
#include "error.h"
#include "ops.h"
#include "rng.h"
#include "test.h"

#define AGREEMENT 1e-4

typedef struct {
    int n, c, h, w, o, kh, kw, stride, padding;
    int bias;      /* 1: the layer has a bias */
    int x_grad;    /* 1: x takes a gradient (0: the network's input images) */
} DnnlCase;

/* Inputs, outputs and gradients of one path. */
typedef struct {
    float *y, *dx, *dw, *db;
} ConvResult;

static long out_size(const DnnlCase *c, int *oh, int *ow) {
    *oh = (c->h + 2 * c->padding - c->kh) / c->stride + 1;
    *ow = (c->w + 2 * c->padding - c->kw) / c->stride + 1;
    return (long)c->n * c->o * *oh * *ow;
}

static float *copy_of(const float *v, long n) {
    if (!v) return NULL;
    float *out = sd_malloc((size_t)n * sizeof(float));
    memcpy(out, v, (size_t)n * sizeof(float));
    return out;
}

/* Run forward and backward, then backward again, so the second pass adds
 * to gradients the first one stored. Returns the results after each pass. */
static void run_path(const DnnlCase *c, int reference, unsigned seed, ConvResult *stored, ConvResult *added) {
    conv2d_use_reference(reference);
    Rng rng;
    rng_seed(&rng, seed, 17);
    Arena keep;
    arena_init(&keep, 1 << 20);
    Tensor *x = tensor_new(&keep, 4, (int[]){c->n, c->c, c->h, c->w}, c->x_grad);
    Tensor *w = tensor_new(&keep, 4, (int[]){c->o, c->c, c->kh, c->kw}, 1);
    Tensor *b = c->bias ? tensor_new(&keep, 1, (int[]){c->o}, 1) : NULL;
    Tensor *inputs[3] = {x, w, b};
    for (int t = 0; t < 3; t++)
        for (long i = 0; inputs[t] && i < inputs[t]->size; i++) inputs[t]->data[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    int oh, ow;
    long y_size = out_size(c, &oh, &ow);
    float *dy = sd_malloc((size_t)y_size * sizeof(float));
    for (long i = 0; i < y_size; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    Graph g;
    graph_init(&g);
    Tensor *y = op_conv2d(&g, x, w, b, c->stride, c->padding);
    ConvResult *results[2] = {stored, added};
    for (int pass = 0; pass < 2; pass++) {
        graph_backward_seeded(&g, y, dy);
        results[pass]->y = copy_of(y->data, y->size);
        results[pass]->dx = copy_of(x->grad, x->size);
        results[pass]->dw = copy_of(w->grad, w->size);
        results[pass]->db = b ? copy_of(b->grad, b->size) : NULL;
    }
    graph_free(&g);
    arena_free(&keep);
    free(dy);
    conv2d_use_reference(0);
}

/* Elements of got farther than AGREEMENT · max |want| from want. */
static long count_far(const float *got, const float *want, long n, double *worst) {
    double scale = 0.0;
    for (long i = 0; i < n; i++) scale = fmax(scale, fabs((double)want[i]));
    long far = 0;
    *worst = 0.0;
    for (long i = 0; i < n; i++) {
        double diff = fabs((double)got[i] - (double)want[i]);
        if (!(diff <= AGREEMENT * scale)) far++;
        if (scale > 0.0) *worst = fmax(*worst, diff / scale);
    }
    return far;
}

static void expect_agree(const char *label, const char *tensor_name, const float *dnnl, const float *ref, long n) {
    if (!ref) {
        EXPECT(!dnnl, "%s: %s exists only through oneDNN", label, tensor_name);
        return;
    }
    double worst;
    long far = count_far(dnnl, ref, n, &worst);
    EXPECT(far == 0, "%s: %s: %ld of %ld elements differ by more than %g of the max magnitude (worst %.3g)", label, tensor_name,
           far, n, AGREEMENT, worst);
}

static void free_result(ConvResult *r) {
    free(r->y);
    free(r->dx);
    free(r->dw);
    free(r->db);
}

static void check_case(const DnnlCase *c, unsigned seed) {
    char label[128];
    snprintf(label, sizeof label, "n %d c %d %dx%d o %d k %dx%d stride %d padding %d%s%s", c->n, c->c, c->h, c->w, c->o,
             c->kh, c->kw, c->stride, c->padding, c->bias ? "" : " no bias", c->x_grad ? "" : " no dx");
    ConvResult ref[2], dnnl[2];
    run_path(c, 1, seed, &ref[0], &ref[1]);
    run_path(c, 0, seed, &dnnl[0], &dnnl[1]);
    int oh, ow;
    long y_size = out_size(c, &oh, &ow), x_size = (long)c->n * c->c * c->h * c->w;
    long w_size = (long)c->o * c->c * c->kh * c->kw;
    static const char *const pass_names[2] = {"stored", "added"};
    for (int pass = 0; pass < 2; pass++) {
        char tensor_name[32];
        expect_agree(label, "y", dnnl[pass].y, ref[pass].y, y_size);
        snprintf(tensor_name, sizeof tensor_name, "dx %s", pass_names[pass]);
        expect_agree(label, tensor_name, dnnl[pass].dx, ref[pass].dx, x_size);
        snprintf(tensor_name, sizeof tensor_name, "dw %s", pass_names[pass]);
        expect_agree(label, tensor_name, dnnl[pass].dw, ref[pass].dw, w_size);
        snprintf(tensor_name, sizeof tensor_name, "db %s", pass_names[pass]);
        expect_agree(label, tensor_name, dnnl[pass].db, ref[pass].db, c->o);
        free_result(&ref[pass]);
        free_result(&dnnl[pass]);
    }
}

static const DnnlCase cases[] = {
    {4, 3, 9, 9, 5, 3, 3, 1, 1, 1, 1},      /* 3 × 3 pad 1, odd channel counts 3 → 5 */
    {3, 16, 9, 7, 32, 3, 3, 2, 1, 1, 1},    /* stride 2, odd sizes, channels a multiple of the block */
    {2, 4, 12, 12, 6, 5, 5, 1, 0, 1, 1},    /* LeNet's 5 × 5 without padding */
    {5, 6, 7, 7, 3, 1, 1, 2, 0, 0, 1},      /* 1 × 1 stride 2 shortcut, no bias */
    {3, 2, 1, 1, 2, 7, 7, 2, 3, 1, 1},      /* kernel wider than the image */
    {1, 16, 8, 8, 32, 3, 3, 1, 1, 1, 1},    /* batch 1 */
    {2, 5, 6, 9, 7, 3, 2, 1, 2, 0, 1},      /* non-square kernel, padding 2, no bias */
    {8, 1, 32, 32, 16, 3, 3, 1, 1, 1, 0},   /* VGG's first layer: one input channel, no dx */
    {16, 32, 4, 4, 32, 3, 3, 1, 1, 1, 1},   /* deep layer on small feature maps, winograd */
    {8, 64, 8, 8, 64, 3, 3, 1, 1, 1, 1},    /* winograd on 8 × 8 maps */
    {8, 32, 16, 16, 32, 3, 3, 1, 1, 0, 1},  /* winograd on 16 × 16 maps, no bias */
    {8, 16, 2, 2, 32, 3, 3, 1, 1, 1, 1},    /* 2 × 2 maps: direct */
};

static void conv2d_dnnl_matches_reference(void) {
    int threads = omp_get_max_threads();
    for (int t = 1; t <= 2; t++) {
        omp_set_num_threads(t);
        for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) check_case(&cases[i], 40 + (unsigned)i);
    }
    omp_set_num_threads(threads);
}

/* oneDNN implements every case above (the wide kernel and the non-square
 * one with its GEMM-based kernels), so the test above never compares the
 * reference with itself. */
static void conv2d_dnnl_implements_cases(void) {
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const DnnlCase *c = &cases[i];
        ConvDims d = {c->n, c->c, c->h, c->w, c->o, c->kh, c->kw, 0, 0, c->stride, c->padding, c->bias};
        out_size(c, &d.oh, &d.ow);
        EXPECT(conv_dnnl_backward_ready(&d), "oneDNN has no conv2d for case %zu (n %d c %d %dx%d o %d k %dx%d)", i, c->n,
               c->c, c->h, c->w, c->o, c->kh, c->kw);
    }
}

/* Repeated oneDNN calls on the same inputs give bitwise identical outputs
 * and gradients at a fixed thread count, which resumed and traced training
 * runs rely on. The shapes are VGG layers', one run by winograd and one by
 * direct convolution, with batches large enough for oneDNN to split the
 * weight-gradient reduction over both threads. */
static void check_repeats(const DnnlCase *c) {
    char label[64];
    snprintf(label, sizeof label, "n %d c %d %dx%d o %d", c->n, c->c, c->h, c->w, c->o);
    ConvResult first[2], again[2];
    run_path(c, 0, 7, &first[0], &first[1]);
    int oh, ow;
    long y_size = out_size(c, &oh, &ow), x_size = (long)c->n * c->c * c->h * c->w;
    long w_size = (long)c->o * c->c * c->kh * c->kw;
    for (int repeat = 0; repeat < 3; repeat++) {
        run_path(c, 0, 7, &again[0], &again[1]);
        for (int pass = 0; pass < 2; pass++) {
            EXPECT(memcmp(first[pass].y, again[pass].y, (size_t)y_size * sizeof(float)) == 0,
                   "%s: y differs on repeat %d", label, repeat);
            EXPECT(memcmp(first[pass].dx, again[pass].dx, (size_t)x_size * sizeof(float)) == 0,
                   "%s: dx differs on repeat %d, pass %d", label, repeat, pass);
            EXPECT(memcmp(first[pass].dw, again[pass].dw, (size_t)w_size * sizeof(float)) == 0,
                   "%s: dw differs on repeat %d, pass %d", label, repeat, pass);
            EXPECT(memcmp(first[pass].db, again[pass].db, (size_t)c->o * sizeof(float)) == 0,
                   "%s: db differs on repeat %d, pass %d", label, repeat, pass);
            free_result(&again[pass]);
        }
    }
    free_result(&first[0]);
    free_result(&first[1]);
}

static void conv2d_dnnl_deterministic(void) {
    int threads = omp_get_max_threads();
    omp_set_num_threads(2);
    check_repeats(&(DnnlCase){64, 32, 16, 16, 32, 3, 3, 1, 1, 1, 1});
    check_repeats(&(DnnlCase){32, 16, 32, 32, 16, 3, 3, 1, 1, 1, 1});
    omp_set_num_threads(threads);
}

/* With oneDNN reporting no implementation, conv2d takes the reference path:
 * for the whole op when the forward is missing, for the gradients when only
 * the backward is. The reference results then repeat bit for bit. */
static void check_fallback(const DnnlCase *c, int forward_missing) {
    const char *label = forward_missing ? "no oneDNN forward" : "no oneDNN backward";
    ConvDims d = {c->n, c->c, c->h, c->w, c->o, c->kh, c->kw, 0, 0, c->stride, c->padding, c->bias};
    out_size(c, &d.oh, &d.ow);
    conv_dnnl_simulate_unimplemented(forward_missing, 1);
    EXPECT(!conv_dnnl_backward_ready(&d), "%s: oneDNN still offers the backward", label);
    ConvResult dnnl[2], ref[2];
    run_path(c, 0, 9, &dnnl[0], &dnnl[1]);
    conv_dnnl_simulate_unimplemented(0, 0);
    run_path(c, 1, 9, &ref[0], &ref[1]);
    int oh, ow;
    long y_size = out_size(c, &oh, &ow), x_size = (long)c->n * c->c * c->h * c->w;
    long w_size = (long)c->o * c->c * c->kh * c->kw;
    for (int pass = 0; pass < 2; pass++) {
        if (forward_missing)
            EXPECT(memcmp(dnnl[pass].y, ref[pass].y, (size_t)y_size * sizeof(float)) == 0, "%s: y differs", label);
        else
            expect_agree(label, "y", dnnl[pass].y, ref[pass].y, y_size);
        EXPECT(memcmp(dnnl[pass].dx, ref[pass].dx, (size_t)x_size * sizeof(float)) == 0, "%s: dx differs, pass %d",
               label, pass);
        EXPECT(memcmp(dnnl[pass].dw, ref[pass].dw, (size_t)w_size * sizeof(float)) == 0, "%s: dw differs, pass %d",
               label, pass);
        EXPECT(memcmp(dnnl[pass].db, ref[pass].db, (size_t)c->o * sizeof(float)) == 0, "%s: db differs, pass %d",
               label, pass);
        free_result(&dnnl[pass]);
        free_result(&ref[pass]);
    }
}

static void conv2d_dnnl_falls_back(void) {
    /* Shapes no other test uses, so no cached primitives exist for them. */
    check_fallback(&(DnnlCase){3, 5, 7, 7, 6, 3, 3, 1, 1, 1, 1}, 1);
    check_fallback(&(DnnlCase){3, 5, 7, 7, 9, 3, 3, 1, 1, 1, 1}, 0);
}

const TestCase conv_dnnl_tests[] = {
    {"conv2d oneDNN implements cases", conv2d_dnnl_implements_cases},
    {"conv2d oneDNN matches reference", conv2d_dnnl_matches_reference},
    {"conv2d oneDNN deterministic", conv2d_dnnl_deterministic},
    {"conv2d oneDNN falls back", conv2d_dnnl_falls_back},
    {NULL, NULL},
};
