/* Multilayer perceptron; see mlp.h. */
#include "mlp.h"

#include <stdlib.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "init.h"
#include "ops.h"

void mlp_init(Mlp *m, int in, int hidden, int depth, int out, ParamStore *ps, Rng *g) {
    memset(m, 0, sizeof *m);
    m->in = in;
    m->hidden = hidden;
    m->depth = depth;
    m->out = out;
    m->w = sd_calloc((size_t)depth + 1, sizeof *m->w);
    m->b = sd_calloc((size_t)depth + 1, sizeof *m->b);
    for (int i = 0; i <= depth; i++) {
        int fan_in = i == 0 ? in : hidden;
        int fan_out = i == depth ? out : hidden;
        char name[PARAM_NAME_MAX];
        snprintf(name, sizeof name, "layers.%d.weight", i);
        m->w[i] = params_add(ps, name, i == depth ? ROLE_OUTPUT : ROLE_WEIGHT, 2, (int[]){fan_out, fan_in});
        snprintf(name, sizeof name, "layers.%d.bias", i);
        m->b[i] = params_add(ps, name, ROLE_BIAS, 1, (int[]){fan_out});
        init_linear_default(m->w[i], m->b[i], g);
    }
}

void mlp_free(Mlp *m) {
    free(m->w);
    free(m->b);
    memset(m, 0, sizeof *m);
}

/* The layers after the first, whose output is h (before its ReLU). */
static Tensor *forward_from_second(Mlp *m, Graph *g, Tensor *h) {
    for (int i = 1; i <= m->depth; i++) {
        h = op_relu(g, h);
        h = op_linear(g, h, m->w[i], m->b[i]);
    }
    return h;
}

Tensor *mlp_forward(Mlp *m, Graph *g, Tensor *x) {
    return forward_from_second(m, g, op_linear(g, x, m->w[0], m->b[0]));
}

Tensor *mlp_forward_onehot(Mlp *m, Graph *g, const int *ids, int rows, int fields) {
    return forward_from_second(m, g, op_linear_onehot(g, ids, rows, fields, m->w[0], m->b[0]));
}

int mlp_pairs(const Mlp *m, LayerPair *out, int max) {
    int n = 0;
    for (int i = 0; i < m->depth && n < max; i++, n++) {
        memset(&out[n], 0, sizeof out[n]);
        snprintf(out[n].from, sizeof out[n].from, "layers.%d.weight", i);
        snprintf(out[n].to, sizeof out[n].to, "layers.%d.weight", i + 1);
        out[n].head = -1;
    }
    return n;
}
