/* Modular arithmetic: every pair (a, b) with a, b in [0, p), label (a ∘ b) mod p.
 * The pairs are shuffled with the run's seed and the first floor(train_frac ·
 * p²) form the training set, the rest the validation set.
 *
 * Transformer inputs are the three tokens "a b =", with '=' as token p, and
 * the model predicts over p + 1 classes at the last position (cross-entropy).
 * MLP inputs are one-hot(a) ‖ one-hot(b) [2p] and the model regresses p
 * outputs onto one-hot(label) with MSE; the predicted class is the argmax. */
#include <stdlib.h>
#include <math.h>
#include <string.h>

#include "error.h"
#include "mlp.h"
#include "ops.h"
#include "rng.h"
#include "task.h"
#include "transformer.h"

typedef struct {
    int p;
    int use_mlp;
    int *a, *b, *label;     /* [p²] in shuffled order: train first, then validation */
    long n_train;
    Transformer tf;
    Mlp mlp;
} Modular;

static int combine(const char *op, int a, int b, int p) {
    if (strcmp(op, "sub") == 0) return ((a - b) % p + p) % p;
    if (strcmp(op, "mul") == 0) return (int)(((long)a * b) % p);
    return (a + b) % p;
}

static long argmax_row(const float *row, int n) {
    long best = 0;
    for (int j = 1; j < n; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

static Tensor *modular_forward(Task *t, Graph *g, Split split, const long *idx, long n, long *correct) {
    Modular *m = t->impl;
    long base = split == SPLIT_TRAIN ? 0 : m->n_train;
    int p = m->p;
    int *labels = arena_alloc(&g->arena, (size_t)n * sizeof(int));
    for (long i = 0; i < n; i++) labels[i] = m->label[base + idx[i]];
    Tensor *out, *loss;
    if (!m->use_mlp) {
        int *tokens = arena_alloc(&g->arena, (size_t)n * 3 * sizeof(int));
        for (long i = 0; i < n; i++) {
            tokens[3 * i] = m->a[base + idx[i]];
            tokens[3 * i + 1] = m->b[base + idx[i]];
            tokens[3 * i + 2] = p;
        }
        out = transformer_forward_last(&m->tf, g, tokens, (int)n, 3);
        loss = op_cross_entropy(g, out, labels);
    } else {
        /* The input is one-hot(a) followed by one-hot(b), given as the two positions of its ones. */
        int *ones = arena_alloc(&g->arena, (size_t)n * 2 * sizeof(int));
        Tensor *target = tensor_new(&g->arena, 2, (int[]){(int)n, p}, 0);
        memset(target->data, 0, (size_t)target->size * sizeof(float));
        for (long i = 0; i < n; i++) {
            ones[2 * i] = m->a[base + idx[i]];
            ones[2 * i + 1] = p + m->b[base + idx[i]];
            target->data[i * p + labels[i]] = 1.0f;
        }
        out = mlp_forward_onehot(&m->mlp, g, ones, (int)n, 2);
        loss = op_mse(g, out, target);
    }
    int classes = tensor_cols(out);
    long hits = 0;
    for (long i = 0; i < n; i++) hits += argmax_row(out->data + i * classes, classes) == labels[i];
    *correct += hits;
    return loss;
}

static void modular_free(Task *t) {
    Modular *m = t->impl;
    free(m->a);
    free(m->b);
    free(m->label);
    if (m->use_mlp)
        mlp_free(&m->mlp);
    else
        transformer_free(&m->tf);
    free(m);
    free(t);
}

Task *modular_task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen) {
    int p = cfg->p;
    long total = (long)p * p;
    long n_train = (long)floor(cfg->train_frac * (double)total);
    if (n_train < 1 || n_train >= total) {
        snprintf(err, errlen, "[task] train_frac = %g leaves %ld of %ld pairs for training; need at least 1 and fewer than all",
                 cfg->train_frac, n_train, total);
        return NULL;
    }
    Modular *m = sd_calloc(1, sizeof *m);
    m->p = p;
    m->use_mlp = strcmp(cfg->arch, "mlp") == 0;
    m->n_train = n_train;
    int *order = sd_malloc((size_t)total * sizeof(int));
    for (long i = 0; i < total; i++) order[i] = (int)i;
    Rng split_rng;
    rng_seed(&split_rng, (uint64_t)cfg->seed, RNG_STREAM_SPLIT);
    rng_shuffle(&split_rng, order, total);
    m->a = sd_malloc((size_t)total * sizeof(int));
    m->b = sd_malloc((size_t)total * sizeof(int));
    m->label = sd_malloc((size_t)total * sizeof(int));
    for (long i = 0; i < total; i++) {
        m->a[i] = order[i] / p;
        m->b[i] = order[i] % p;
        m->label[i] = combine(cfg->op, m->a[i], m->b[i], p);
    }
    free(order);

    Rng init_rng;
    rng_seed(&init_rng, (uint64_t)cfg->seed, RNG_STREAM_INIT);
    if (m->use_mlp) {
        mlp_init(&m->mlp, 2 * p, cfg->hidden, cfg->depth, p, ps, &init_rng);
    } else {
        TransformerConfig tc = {
            .vocab = p + 1,
            .max_seq = 3,
            .d_model = cfg->d_model,
            .n_heads = cfg->n_heads,
            .d_mlp = cfg->d_mlp,
            .n_layers = cfg->n_layers,
            .layernorm = cfg->layernorm,
            .learned_pos = strcmp(cfg->positional, "learned") == 0,
            .gelu = strcmp(cfg->activation, "gelu") == 0,
        };
        transformer_init(&m->tf, &tc, ps, &init_rng);
    }

    Task *t = sd_calloc(1, sizeof *t);
    t->name = "modular";
    t->n_train = n_train;
    t->n_val = total - n_train;
    t->eval_batch = 8192; /* activations of 8192 three-token inputs take about 50 MB */
    t->forward = modular_forward;
    t->free = modular_free;
    t->impl = m;
    t->n_pairs = m->use_mlp ? mlp_pairs(&m->mlp, t->pairs, LAYER_PAIRS_MAX)
                            : transformer_pairs(&m->tf, t->pairs, LAYER_PAIRS_MAX);
    return t;
}
