/* Finite-difference gradient checks for every op's backward.
 *
 * For an op y = f(x1, x2, ...) and a fixed random R, the objective is
 * L = Σ R ⊙ y, accumulated in double precision. The analytic gradient comes
 * from graph_backward_seeded(y, R); the reference is the central difference
 * (L(x + h) − L(x − h)) / 2h per input element, h = 1e-3 (relative to
 * max(1, |x|)). The forward runs in float32, so the reference carries an
 * error of roughly 1e-7 · |L| / h; the tolerance is rtol 1e-2 plus atol
 * 2e-3 · max(1, max |g|). A flipped sign or a missing term in any backward
 * exceeds it by orders of magnitude. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "mlp.h"
#include "ops.h"
#include "rng.h"
#include "test.h"
#include "transformer.h"

/* The case tables below list leading fields positionally and leave the rest zero. */
#pragma GCC diagnostic ignored "-Wmissing-field-initializers"

#define MAX_INPUTS 4

typedef struct {
    const char *name;
    int n_inputs;
    int ndim[MAX_INPUTS];
    int shape[MAX_INPUTS][TENSOR_MAX_DIMS];
    int no_grad[MAX_INPUTS];   /* 1: input receives no gradient (constant) */
    float away_from_zero;      /* > 0: inputs have |x| >= this (kinks of relu) */
    int ids[32];               /* token ids or labels, op-specific */
    int iarg[3];
    float farg;
} GradCase;

typedef Tensor *(*ForwardFn)(Graph *g, Tensor **in, const GradCase *c);

static double objective(Graph *g, ForwardFn fwd, Tensor **in, const GradCase *c, const float *r, long *out_size) {
    graph_reset(g);
    int rec = g->recording;
    g->recording = 0;
    Tensor *y = fwd(g, in, c);
    g->recording = rec;
    double total = 0.0;
    for (long i = 0; i < y->size; i++) total += (double)r[i] * (double)y->data[i];
    if (out_size) *out_size = y->size;
    return total;
}

/* Run one gradient check; returns the worst error ratio (error / tolerance). */
static void check_case(ForwardFn fwd, const GradCase *c, unsigned seed) {
    Rng rng;
    rng_seed(&rng, seed, 77);
    Arena keep;
    arena_init(&keep, 1 << 20);
    Tensor *in[MAX_INPUTS];
    for (int k = 0; k < c->n_inputs; k++) {
        in[k] = tensor_new(&keep, c->ndim[k], c->shape[k], !c->no_grad[k]);
        for (long i = 0; i < in[k]->size; i++) {
            float v = 2.0f * rng_uniform(&rng) - 1.0f;
            if (c->away_from_zero > 0.0f) v = (v < 0 ? -1.0f : 1.0f) * (c->away_from_zero + fabsf(v));
            in[k]->data[i] = v;
        }
    }
    Graph g;
    graph_init(&g);
    g.recording = 0;
    long out_size = fwd(&g, in, c)->size;
    float *r = tensor_new(&keep, 1, (int[]){(int)out_size}, 0)->data;
    for (long i = 0; i < out_size; i++) r[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    graph_reset(&g);
    g.recording = 1;
    Tensor *y = fwd(&g, in, c);
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
            double plus = objective(&g, fwd, in, c, r, NULL);
            in[k]->data[i] = saved - h;
            double minus = objective(&g, fwd, in, c, r, NULL);
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

static Tensor *fwd_linear(Graph *g, Tensor **in, const GradCase *c) {
    return op_linear(g, in[0], in[1], c->n_inputs > 2 ? in[2] : NULL);
}
static Tensor *fwd_linear_onehot(Graph *g, Tensor **in, const GradCase *c) {
    return op_linear_onehot(g, c->ids, c->iarg[0], c->iarg[1], in[0], c->n_inputs > 1 ? in[1] : NULL);
}
static Tensor *fwd_matmul(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_matmul(g, in[0], in[1]); }
static Tensor *fwd_add(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_add(g, in[0], in[1]); }
static Tensor *fwd_add_bias(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_add_bias(g, in[0], in[1]); }
static Tensor *fwd_mul(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_mul(g, in[0], in[1]); }
static Tensor *fwd_scale(Graph *g, Tensor **in, const GradCase *c) { return op_scale(g, in[0], c->farg); }
static Tensor *fwd_relu(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_relu(g, in[0]); }
static Tensor *fwd_gelu(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_gelu(g, in[0]); }
static Tensor *fwd_embedding(Graph *g, Tensor **in, const GradCase *c) {
    return op_embedding(g, in[0], c->ids, c->iarg[0], c->iarg[1], c->farg);
}
static Tensor *fwd_add_position(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_add_position(g, in[0], in[1]); }
static Tensor *fwd_take_last(Graph *g, Tensor **in, const GradCase *c) { return op_take_last(g, in[0], c->iarg[0]); }
static Tensor *fwd_attention(Graph *g, Tensor **in, const GradCase *c) {
    return op_attention(g, in[0], in[1], in[2], c->iarg[0], c->iarg[1]);
}
static Tensor *fwd_layernorm(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_layernorm(g, in[0], in[1], in[2], 1e-5f); }
static Tensor *fwd_cross_entropy(Graph *g, Tensor **in, const GradCase *c) { return op_cross_entropy(g, in[0], c->ids); }
static Tensor *fwd_mse(Graph *g, Tensor **in, const GradCase *c) { (void)c; return op_mse(g, in[0], in[1]); }

/* ---- cases ------------------------------------------------------------------ */

static void grad_linear(void) {
    check_case(fwd_linear, &(GradCase){"linear 3-D input", 3, {3, 2, 1}, {{2, 3, 5}, {4, 5}, {4}}}, 1);
    check_case(fwd_linear, &(GradCase){"linear batch 1", 3, {2, 2, 1}, {{1, 6}, {3, 6}, {3}}}, 2);
    check_case(fwd_linear, &(GradCase){"linear no bias", 2, {2, 2}, {{4, 3}, {7, 3}}}, 3);
}

static void grad_linear_onehot(void) {
    /* The second row lists column 3 twice, which counts it twice. */
    check_case(fwd_linear_onehot,
               &(GradCase){"linear_onehot", 2, {2, 1}, {{5, 7}, {5}}, .ids = {0, 4, 6, 1, 3, 3, 2, 5, 6, 6, 0, 1},
                           .iarg = {4, 3}},
               41);
    check_case(fwd_linear_onehot, &(GradCase){"linear_onehot no bias", 1, {2}, {{3, 4}}, .ids = {1, 0, 3}, .iarg = {3, 1}},
               42);
}

static void grad_matmul(void) {
    check_case(fwd_matmul, &(GradCase){"matmul", 2, {2, 2}, {{3, 5}, {5, 2}}}, 4);
    check_case(fwd_matmul, &(GradCase){"matmul vector", 2, {2, 2}, {{1, 4}, {4, 1}}}, 5);
}

static void grad_elementwise(void) {
    check_case(fwd_add, &(GradCase){"add", 2, {2, 2}, {{3, 4}, {3, 4}}}, 6);
    check_case(fwd_add_bias, &(GradCase){"add_bias", 2, {3, 1}, {{2, 3, 4}, {4}}}, 7);
    check_case(fwd_mul, &(GradCase){"mul", 2, {3, 3}, {{2, 2, 3}, {2, 2, 3}}}, 8);
    check_case(fwd_scale, &(GradCase){"scale", 1, {1}, {{5}}, .farg = -2.5f}, 9);
}

static void grad_activations(void) {
    check_case(fwd_relu, &(GradCase){"relu", 1, {2}, {{4, 5}}, .away_from_zero = 0.05f}, 10);
    check_case(fwd_gelu, &(GradCase){"gelu", 1, {2}, {{3, 7}}}, 11);
    check_case(fwd_gelu, &(GradCase){"gelu wide range", 1, {1}, {{9}}, .away_from_zero = 1.0f}, 12);
}

static void grad_embedding(void) {
    check_case(fwd_embedding,
               &(GradCase){"embedding repeated ids", 1, {2}, {{7, 4}}, .ids = {0, 3, 3, 6, 1, 3}, .iarg = {2, 3}, .farg = 1.5f},
               13);
    check_case(fwd_embedding, &(GradCase){"embedding batch 1", 1, {2}, {{5, 3}}, .ids = {4, 2}, .iarg = {1, 2}, .farg = 1.0f},
               14);
}

static void grad_positions(void) {
    check_case(fwd_add_position, &(GradCase){"add_position learned", 2, {3, 2}, {{2, 3, 4}, {5, 4}}}, 15);
    check_case(fwd_add_position,
               &(GradCase){"add_position constant", 2, {3, 2}, {{1, 2, 3}, {2, 3}}, .no_grad = {0, 1}}, 16);
    check_case(fwd_take_last, &(GradCase){"take_last", 1, {3}, {{2, 4, 3}}, .iarg = {2}}, 17);
}

static void grad_attention(void) {
    check_case(fwd_attention,
               &(GradCase){"attention causal", 3, {3, 3, 3}, {{2, 3, 6}, {2, 3, 6}, {2, 3, 6}}, .iarg = {2, 1}}, 18);
    check_case(fwd_attention,
               &(GradCase){"attention last query", 3, {3, 3, 3}, {{2, 1, 8}, {2, 3, 8}, {2, 3, 8}}, .iarg = {4, 1}}, 19);
    check_case(fwd_attention,
               &(GradCase){"attention not causal", 3, {3, 3, 3}, {{1, 4, 4}, {1, 4, 4}, {1, 4, 4}}, .iarg = {1, 0}}, 20);
    check_case(fwd_attention,
               &(GradCase){"attention batch 1 two queries", 3, {3, 3, 3}, {{1, 2, 6}, {1, 5, 6}, {1, 5, 6}}, .iarg = {3, 1}},
               21);
}

static void grad_layernorm(void) {
    check_case(fwd_layernorm, &(GradCase){"layernorm", 3, {2, 1, 1}, {{3, 5}, {5}, {5}}}, 22);
    check_case(fwd_layernorm, &(GradCase){"layernorm 3-D", 3, {3, 1, 1}, {{2, 2, 6}, {6}, {6}}}, 23);
}

static void grad_losses(void) {
    check_case(fwd_cross_entropy, &(GradCase){"cross_entropy", 1, {2}, {{4, 7}}, .ids = {0, 6, 3, 3}}, 24);
    check_case(fwd_cross_entropy, &(GradCase){"cross_entropy batch 1", 1, {2}, {{1, 5}}, .ids = {2}}, 25);
    check_case(fwd_mse, &(GradCase){"mse", 2, {2, 2}, {{3, 4}, {3, 4}}, .no_grad = {0, 1}}, 26);
}

/* ---- whole models ------------------------------------------------------------ */

/* Finite differences on a sample of every parameter of a model, with the
 * objective Σ R ⊙ output in double precision as for single ops. An element
 * whose one-sided differences disagree sits on a ReLU kink within ±h and is
 * skipped; at most a tenth of the samples may be skipped. */
typedef Tensor *(*ModelOutput)(Graph *g, void *model);

static double model_objective(Graph *g, ModelOutput fn, void *model, const float *r) {
    graph_reset(g);
    g->recording = 0;
    Tensor *y = fn(g, model);
    g->recording = 1;
    double total = 0.0;
    for (long i = 0; i < y->size; i++) total += (double)r[i] * (double)y->data[i];
    return total;
}

static void check_model(const char *name, ParamStore *ps, ModelOutput fn, void *model) {
    Graph g;
    graph_init(&g);
    params_zero_grad(ps);
    Tensor *y = fn(&g, model);
    float *r = malloc((size_t)y->size * sizeof(float));
    Rng rng;
    rng_seed(&rng, 99, 3);
    for (long i = 0; i < y->size; i++) r[i] = 2.0f * rng_uniform(&rng) - 1.0f;
    graph_backward_seeded(&g, y, r);
    long sampled = 0, skipped = 0;
    for (int k = 0; k < ps->count; k++) {
        Param *p = &ps->params[k];
        double gmax = 0.0;
        for (long i = 0; i < p->t.size; i++) gmax = fmax(gmax, fabs((double)p->t.grad[i]));
        long stride = p->t.size > 40 ? p->t.size / 40 : 1; /* about 40 elements per parameter */
        int failures = 0;
        for (long i = 0; i < p->t.size; i += stride) {
            float saved = p->t.data[i];
            float h = 1e-3f * fmaxf(1.0f, fabsf(saved));
            double center = model_objective(&g, fn, model, r);
            p->t.data[i] = saved + h;
            double plus = model_objective(&g, fn, model, r);
            p->t.data[i] = saved - h;
            double minus = model_objective(&g, fn, model, r);
            p->t.data[i] = saved;
            sampled++;
            double forward = (plus - center) / (double)h, backward = (center - minus) / (double)h;
            if (!test_close(forward, backward, 2e-2, 2e-3 * fmax(1.0, gmax))) {
                skipped++;
                continue;
            }
            double numeric = (plus - minus) / (2.0 * (double)h);
            if (!test_close(p->t.grad[i], numeric, 1e-2, 2e-3 * fmax(1.0, gmax)) && failures++ < 3)
                EXPECT(0, "%s: %s[%ld]: backward %.6g, finite difference %.6g", name, p->name, i, (double)p->t.grad[i],
                       numeric);
        }
    }
    EXPECT(skipped * 10 <= sampled, "%s: %ld of %ld samples skipped at kinks", name, skipped, sampled);
    free(r);
    graph_free(&g);
}

typedef struct {
    Transformer tf;
    int batch;
    int tokens[64 * 3];
} TinyTransformer;

static Tensor *transformer_logits(Graph *g, void *model) {
    TinyTransformer *m = model;
    return transformer_forward_last(&m->tf, g, m->tokens, m->batch, 3);
}

static void tiny_transformer(TinyTransformer *m, ParamStore *ps, int batch, int layernorm, int layers) {
    TransformerConfig cfg = {.vocab = 5, .max_seq = 3, .d_model = 8, .n_heads = 2, .d_mlp = 12, .n_layers = layers,
                             .layernorm = layernorm, .learned_pos = layernorm, .gelu = layernorm};
    Rng rng;
    rng_seed(&rng, 11, 1);
    transformer_init(&m->tf, &cfg, ps, &rng);
    m->batch = batch;
    for (int i = 0; i < batch * 3; i++) m->tokens[i] = (int)rng_below(&rng, 5);
}

static void grad_transformer(void) {
    /* Batch 2 runs the per-position path; batch 40 (> vocab · seq = 15) the token-table path. */
    int batches[2] = {2, 40};
    for (int b = 0; b < 2; b++) {
        for (int variant = 0; variant < 2; variant++) {
            ParamStore *ps = calloc(1, sizeof *ps);
            TinyTransformer *m = calloc(1, sizeof *m);
            tiny_transformer(m, ps, batches[b], variant, variant + 1);
            char name[64];
            snprintf(name, sizeof name, "transformer batch %d %s", batches[b], variant ? "2 layers LN" : "1 layer");
            check_model(name, ps, transformer_logits, m);
            transformer_free(&m->tf);
            params_free(ps);
            free(ps);
            free(m);
        }
    }
}

static void transformer_paths_agree(void) {
    /* The token-table path and the per-position path compute the same logits. */
    ParamStore *ps = calloc(1, sizeof *ps);
    TinyTransformer *m = calloc(1, sizeof *m);
    tiny_transformer(m, ps, 40, 0, 1);
    Graph g;
    graph_init(&g);
    g.recording = 0;
    Tensor *all = transformer_forward_last(&m->tf, &g, m->tokens, 40, 3);
    for (int b = 0; b < 40; b++) {
        Graph one;
        graph_init(&one);
        one.recording = 0;
        Tensor *single = transformer_forward_last(&m->tf, &one, m->tokens + 3 * b, 1, 3);
        for (int j = 0; j < 5; j++)
            EXPECT(test_close(all->data[b * 5 + j], single->data[j], 1e-5, 1e-6), "row %d class %d: %g vs %g", b, j,
                   (double)all->data[b * 5 + j], (double)single->data[j]);
        graph_free(&one);
    }
    graph_free(&g);
    transformer_free(&m->tf);
    params_free(ps);
    free(ps);
    free(m);
}

typedef struct {
    Mlp mlp;
    float x[6 * 9];
} TinyMlp;

static Tensor *mlp_output(Graph *g, void *model) {
    TinyMlp *m = model;
    Tensor *x = tensor_new(&g->arena, 2, (int[]){6, 9}, 0);
    memcpy(x->data, m->x, sizeof m->x);
    return mlp_forward(&m->mlp, g, x);
}

static void grad_mlp(void) {
    ParamStore *ps = calloc(1, sizeof *ps);
    TinyMlp *m = calloc(1, sizeof *m);
    Rng rng;
    rng_seed(&rng, 5, 1);
    mlp_init(&m->mlp, 9, 7, 3, 4, ps, &rng);
    for (int i = 0; i < 6 * 9; i++) m->x[i] = rng_uniform(&rng);
    check_model("mlp", ps, mlp_output, m);
    mlp_free(&m->mlp);
    params_free(ps);
    free(ps);
    free(m);
}

const TestCase grad_tests[] = {
    {"grad linear", grad_linear},
    {"grad linear_onehot", grad_linear_onehot},
    {"grad matmul", grad_matmul},
    {"grad elementwise", grad_elementwise},
    {"grad activations", grad_activations},
    {"grad embedding", grad_embedding},
    {"grad positions", grad_positions},
    {"grad attention", grad_attention},
    {"grad layernorm", grad_layernorm},
    {"grad losses", grad_losses},
    {"grad transformer", grad_transformer},
    {"transformer paths agree", transformer_paths_agree},
    {"grad mlp", grad_mlp},
    {NULL, NULL},
};
