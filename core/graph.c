/* Tape and backward dispatch; see graph.h. */
#include "graph.h"

#include <stdlib.h>
#include <omp.h>
#include <stdio.h>
#include <string.h>

#include "ops_internal.h"

typedef struct {
    const char *name;
    BackwardFn backward;
} OpInfo;

static const OpInfo op_table[] = {
    [OP_LINEAR] = {"linear", linear_backward},
    [OP_LINEAR_ONEHOT] = {"linear_onehot", linear_onehot_backward},
    [OP_MATMUL] = {"matmul", matmul_backward},
    [OP_ADD] = {"add", add_backward},
    [OP_ADD_BIAS] = {"add_bias", add_bias_backward},
    [OP_MUL] = {"mul", mul_backward},
    [OP_SCALE] = {"scale", scale_backward},
    [OP_RELU] = {"relu", relu_backward},
    [OP_GELU] = {"gelu", gelu_backward},
    [OP_EMBEDDING] = {"embedding", embedding_backward},
    [OP_ADD_POSITION] = {"add_position", add_position_backward},
    [OP_TAKE_LAST] = {"take_last", take_last_backward},
    [OP_ATTENTION] = {"attention", attention_backward},
    [OP_LAYERNORM] = {"layernorm", layernorm_backward},
    [OP_CROSS_ENTROPY] = {"cross_entropy", cross_entropy_backward},
    [OP_MSE] = {"mse", mse_backward},
    [OP_CONV2D] = {"conv2d", conv2d_backward},
    [OP_MAX_POOL2D] = {"max_pool2d", max_pool2d_backward},
    [OP_AVG_POOL2D] = {"avg_pool2d", avg_pool2d_backward},
    [OP_GLOBAL_AVG_POOL] = {"global_avg_pool", global_avg_pool_backward},
    [OP_BATCHNORM] = {"batchnorm", batchnorm_backward},
    [OP_DROPOUT] = {"dropout", dropout_backward},
};
static_assert(sizeof op_table / sizeof op_table[0] == OP_COUNT, "op_table must list every OpKind");

const char *op_name(OpKind op) {
    CHECK(op >= 0 && op < OP_COUNT, "op kind %d", (int)op);
    return op_table[op].name;
}

void graph_init(Graph *g) {
    memset(g, 0, sizeof *g);
    arena_init(&g->arena, (size_t)64 << 20);
    g->recording = 1;
    g->training = 1;
    rng_seed(&g->rng, 0, 0);
}

void graph_reset(Graph *g) {
    arena_reset(&g->arena);
    g->n = 0;
}

void graph_free(Graph *g) {
    arena_free(&g->arena);
    free(g->tape);
    memset(g, 0, sizeof *g);
}

/* Per-op wall time, collected when SPECDYN_PROFILE is set in the environment.
 * An op's forward time is measured from the previous tape record to its own
 * record, so it includes any untaped work in between. */
static int profile_enabled = -1;
static double profile_forward[OP_COUNT], profile_backward[OP_COUNT];
static long profile_calls[OP_COUNT];
static double profile_last;

static int profiling(void) {
    if (profile_enabled < 0) profile_enabled = getenv("SPECDYN_PROFILE") != NULL;
    return profile_enabled;
}

void graph_profile_report(FILE *out) {
    if (!profiling()) return;
    double total = 0.0;
    for (int i = 0; i < OP_COUNT; i++) total += profile_forward[i] + profile_backward[i];
    fprintf(out, "%-16s %8s %10s %10s %6s\n", "op", "calls", "fwd_s", "bwd_s", "share");
    for (int i = 0; i < OP_COUNT; i++) {
        if (!profile_calls[i]) continue;
        fprintf(out, "%-16s %8ld %10.3f %10.3f %5.1f%%\n", op_table[i].name, profile_calls[i], profile_forward[i],
                profile_backward[i], 100.0 * (profile_forward[i] + profile_backward[i]) / (total > 0 ? total : 1));
    }
}

TapeEntry *graph_record(Graph *g, OpKind op, Tensor *out) {
    if (profiling()) {
        double now = omp_get_wtime();
        if (g->n > 0) profile_forward[op] += now - profile_last;
        profile_calls[op]++;
        profile_last = now;
    }
    if (g->n == g->cap) {
        g->cap = g->cap ? 2 * g->cap : 256;
        g->tape = sd_realloc(g->tape, (size_t)g->cap * sizeof *g->tape);
    }
    TapeEntry *e = &g->tape[g->n++];
    memset(e, 0, sizeof *e);
    e->op = op;
    e->out = out;
    return e;
}

int graph_needs_grad(const Graph *g, const Tensor *a, const Tensor *b, const Tensor *c) {
    if (!g->recording) return 0;
    return (a && a->grad) || (b && b->grad) || (c && c->grad);
}

void graph_backward(Graph *g, Tensor *loss) {
    CHECK(loss->size == 1, "backward needs a one-element loss, got %ld elements", loss->size);
    const float one = 1.0f;
    graph_backward_seeded(g, loss, &one);
}

void graph_backward_seeded(Graph *g, Tensor *out, const float *seed) {
    CHECK(out->grad != NULL, "output has no gradient: was the graph recording?");
    memcpy(out->grad, seed, (size_t)out->size * sizeof(float));
    if (out->grad_unset) *out->grad_unset = 0;
    for (int i = g->n - 1; i >= 0; i--) {
        TapeEntry *e = &g->tape[i];
        /* An output no later op sent a gradient to contributes nothing. */
        if (!e->out->grad || (e->out->grad_unset && *e->out->grad_unset)) continue;
        double t0 = profiling() ? omp_get_wtime() : 0.0;
        op_table[e->op].backward(e);
        if (profiling()) profile_backward[e->op] += omp_get_wtime() - t0;
    }
}

Tensor *op_output(Graph *g, int ndim, const int *shape, int needs_grad) {
    return tensor_new(&g->arena, ndim, shape, needs_grad);
}

void shape_check_failed(const char *file, int line, const char *op, const char *cond,
                        const Tensor *a, const Tensor *b, const Tensor *c) {
    char sa[64] = "-", sb[64] = "-", sc[64] = "-";
    if (a) tensor_shape_str(a, sa, sizeof sa);
    if (b) tensor_shape_str(b, sb, sizeof sb);
    if (c) tensor_shape_str(c, sc, sizeof sc);
    sd_check_failed(file, line, cond, "op %s: shapes %s %s %s", op, sa, sb, sc);
}
