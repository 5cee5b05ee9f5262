/* Golden-value tests of the image ops: conv2d, pooling, batch norm in
 * training and evaluation (output, gradients, running statistics) and one
 * VGG block (conv 3×3 → batch norm → ReLU → 2×2 max pool), against
 * tests/golden/conv.txt from tests/golden/make_golden_conv.py (PyTorch 1.13).
 * The file format is described in tests/golden/make_golden.py. Values must
 * agree within 1e-4 relative plus 1e-6 absolute; gradients are those of
 * sum(y ⊙ R) for the file's fixed R. Run from the repository root. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "test.h"

#define GOLDEN_RTOL 1e-4
#define GOLDEN_ATOL 1e-6
#define NAME_MAX_LEN 128
#define CONV_GOLDEN "tests/golden/conv.txt"
#define REGENERATE "/usr/bin/python3 tests/golden/make_golden_conv.py"

typedef struct {
    char name[NAME_MAX_LEN];
    int ndim;
    int shape[TENSOR_MAX_DIMS];
    long size;
    float *values;
} Golden;

static Golden *goldens;
static int n_goldens;

/* Load conv.txt once; returns 0 after recording a failure when it is missing or malformed. */
static int load_goldens(void) {
    if (goldens) return 1;
    FILE *f = fopen(CONV_GOLDEN, "r");
    EXPECT(f != NULL, "%s not found: run the tests from the repository root, or regenerate it with %s", CONV_GOLDEN,
           REGENERATE);
    if (!f) return 0;
    char line[512];
    int cap = 0;
    while (fgets(line, sizeof line, f)) {
        if (line[0] == '#' || line[0] == '\n') continue;
        if (n_goldens == cap) goldens = realloc(goldens, (size_t)(cap = cap ? 2 * cap : 64) * sizeof *goldens);
        Golden *gd = &goldens[n_goldens];
        memset(gd, 0, sizeof *gd);
        int used = 0;
        if (sscanf(line, "%127s %d%n", gd->name, &gd->ndim, &used) != 2 || gd->ndim < 0 || gd->ndim > TENSOR_MAX_DIMS) {
            EXPECT(0, "%s: malformed header '%s'; regenerate it with %s", CONV_GOLDEN, line, REGENERATE);
            break;
        }
        gd->size = 1;
        char *p = line + used;
        for (int d = 0; d < gd->ndim; d++) {
            gd->shape[d] = (int)strtol(p, &p, 10);
            gd->size *= gd->shape[d];
        }
        gd->values = malloc((size_t)gd->size * sizeof(float));
        for (long i = 0; i < gd->size; i++)
            if (fscanf(f, "%f", &gd->values[i]) != 1) {
                EXPECT(0, "%s: %s has fewer than %ld values", CONV_GOLDEN, gd->name, gd->size);
                break;
            }
        n_goldens++;
    }
    fclose(f);
    return n_goldens > 0;
}

static const Golden *find(const char *prefix, const char *suffix) {
    char name[NAME_MAX_LEN];
    snprintf(name, sizeof name, "%s.%s", prefix, suffix);
    for (int i = 0; i < n_goldens; i++)
        if (strcmp(goldens[i].name, name) == 0) return &goldens[i];
    EXPECT(0, "array %s missing from %s; regenerate it with %s", name, CONV_GOLDEN, REGENERATE);
    return NULL;
}

static int scalar(const char *prefix, const char *suffix) {
    const Golden *gd = find(prefix, suffix);
    return gd ? (int)lrintf(gd->values[0]) : 0;
}

/* A tensor with the golden array's shape and values (a gradient when with_grad). */
static Tensor *input(Graph *g, const char *prefix, const char *suffix, int with_grad) {
    const Golden *gd = find(prefix, suffix);
    if (!gd) return tensor_new(&g->arena, 1, (int[]){1}, with_grad);
    Tensor *t = tensor_new(&g->arena, gd->ndim ? gd->ndim : 1, gd->ndim ? gd->shape : (int[]){1}, with_grad);
    memcpy(t->data, gd->values, (size_t)t->size * sizeof(float));
    return t;
}

static void expect_golden(const char *prefix, const char *suffix, const float *actual, long n) {
    const Golden *gd = find(prefix, suffix);
    if (!gd) return;
    EXPECT(gd->size == n, "%s.%s: C has %ld values, PyTorch %ld", prefix, suffix, n, gd->size);
    if (gd->size != n) return;
    long bad = 0, first = -1;
    for (long i = 0; i < n; i++)
        if (!test_close(actual[i], gd->values[i], GOLDEN_RTOL, GOLDEN_ATOL) && bad++ == 0) first = i;
    EXPECT(bad == 0, "%s.%s: %ld of %ld values differ from PyTorch; first [%ld] C %.9g vs %.9g", prefix, suffix, bad, n,
           first, first >= 0 ? (double)actual[first] : 0.0, first >= 0 ? (double)gd->values[first] : 0.0);
}

/* Seed the backward pass with the case's R and compare output and input gradients. */
static void check_output_and_grads(Graph *g, const char *prefix, Tensor *y, Tensor *const *inputs,
                                   const char *const *names, int n) {
    expect_golden(prefix, "out", y->data, y->size);
    const Golden *r = find(prefix, "r");
    if (!r || r->size != y->size) return;
    graph_backward_seeded(g, y, r->values);
    for (int i = 0; i < n; i++) {
        char suffix[64];
        snprintf(suffix, sizeof suffix, "grad.%s", names[i]);
        expect_golden(prefix, suffix, inputs[i]->grad, inputs[i]->size);
    }
}

static void golden_conv2d(void) {
    if (!load_goldens()) return;
    static const char *const cases[] = {"conv_s1p1", "conv_s2p0", "conv_s2p2_nobias", "conv_1x1"};
    static const char *const names[] = {"x", "w", "b"};
    for (int c = 0; c < 4; c++) {
        Graph g;
        graph_init(&g);
        int bias = strstr(cases[c], "nobias") == NULL;
        Tensor *in[3] = {input(&g, cases[c], "x", 1), input(&g, cases[c], "w", 1), bias ? input(&g, cases[c], "b", 1) : NULL};
        Tensor *y = op_conv2d(&g, in[0], in[1], in[2], scalar(cases[c], "stride"), scalar(cases[c], "padding"));
        check_output_and_grads(&g, cases[c], y, in, names, bias ? 3 : 2);
        graph_free(&g);
    }
}

static void golden_pooling(void) {
    if (!load_goldens()) return;
    static const char *const cases[] = {"max_pool_k2s2", "max_pool_k3s2p1", "avg_pool_k2s2", "avg_pool_k3s2p1"};
    static const char *const names[] = {"x"};
    for (int c = 0; c < 4; c++) {
        Graph g;
        graph_init(&g);
        Tensor *x = input(&g, cases[c], "x", 1);
        int k = scalar(cases[c], "kernel"), s = scalar(cases[c], "stride"), p = scalar(cases[c], "padding");
        Tensor *y = c < 2 ? op_max_pool2d(&g, x, k, s, p) : op_avg_pool2d(&g, x, k, s, p);
        check_output_and_grads(&g, cases[c], y, &x, names, 1);
        graph_free(&g);
    }
    Graph g;
    graph_init(&g);
    Tensor *x = input(&g, "global_avg_pool", "x", 1);
    check_output_and_grads(&g, "global_avg_pool", op_global_avg_pool(&g, x), &x, names, 1);
    graph_free(&g);
}

static void golden_batchnorm(void) {
    if (!load_goldens()) return;
    static const char *const cases[] = {"bn_train_4d", "bn_train_2d", "bn_eval_4d", "bn_eval_2d"};
    static const char *const names[] = {"x", "gamma", "beta"};
    for (int c = 0; c < 4; c++) {
        Graph g;
        graph_init(&g);
        g.training = c < 2;
        Tensor *in[3] = {input(&g, cases[c], "x", 1), input(&g, cases[c], "gamma", 1), input(&g, cases[c], "beta", 1)};
        Tensor *rm = input(&g, cases[c], "running_mean", 0), *rv = input(&g, cases[c], "running_var", 0);
        Tensor *y = op_batchnorm(&g, in[0], in[1], in[2], rm, rv, 0.1f, 1e-5f);
        check_output_and_grads(&g, cases[c], y, in, names, 3);
        expect_golden(cases[c], "new_running_mean", rm->data, rm->size);
        expect_golden(cases[c], "new_running_var", rv->data, rv->size);
        graph_free(&g);
    }
}

static void golden_vgg_block(void) {
    if (!load_goldens()) return;
    static const char *const names[] = {"x", "w", "b", "gamma", "beta"};
    const char *prefix = "vgg_block";
    Graph g;
    graph_init(&g);
    Tensor *in[5];
    for (int i = 0; i < 5; i++) in[i] = input(&g, prefix, names[i], 1);
    Tensor *rm = input(&g, prefix, "running_mean", 0), *rv = input(&g, prefix, "running_var", 0);
    Tensor *h = op_conv2d(&g, in[0], in[1], in[2], 1, 1);
    h = op_batchnorm(&g, h, in[3], in[4], rm, rv, 0.1f, 1e-5f);
    Tensor *y = op_max_pool2d(&g, op_relu(&g, h), 2, 2, 0);
    check_output_and_grads(&g, prefix, y, in, names, 5);
    expect_golden(prefix, "new_running_mean", rm->data, rm->size);
    expect_golden(prefix, "new_running_var", rv->data, rv->size);
    graph_free(&g);
}

const TestCase golden_conv_tests[] = {
    {"golden conv2d", golden_conv2d},
    {"golden pooling", golden_pooling},
    {"golden batchnorm", golden_batchnorm},
    {"golden vgg block", golden_vgg_block},
    {NULL, NULL},
};
