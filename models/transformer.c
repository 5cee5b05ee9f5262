/* Transformer model; see transformer.h. */
#include "transformer.h"

#include <stdlib.h>
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "error.h"
#include "init.h"
#include "ops.h"

static Tensor *add_param(ParamStore *ps, ParamRole role, int rows, int cols, const char *fmt, int layer,
                         const char *suffix) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, fmt, layer, suffix);
    if (cols > 0) return params_add(ps, name, role, 2, (int[]){rows, cols});
    return params_add(ps, name, role, 1, (int[]){rows});
}

void transformer_init(Transformer *m, const TransformerConfig *cfg, ParamStore *ps, Rng *g) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    int d = cfg->d_model, f = cfg->d_mlp, v = cfg->vocab;
    CHECK(d % cfg->n_heads == 0, "d_model %d not divisible by n_heads %d", d, cfg->n_heads);

    m->embed = params_add(ps, "embed.weight", ROLE_EMBEDDING, 2, (int[]){v, d});
    init_uniform(m->embed, g, -0.1f, 0.1f);
    if (cfg->learned_pos) {
        m->pos = params_add(ps, "pos.weight", ROLE_EMBEDDING, 2, (int[]){cfg->max_seq, d});
        init_normal(m->pos, g, 0.0f, 1.0f); /* nn.Embedding default */
    } else {
        /* pe[t, 2i] = sin(t ω_i), pe[t, 2i + 1] = cos(t ω_i), ω_i = 10000^(−2i / D). */
        m->sinusoid.ndim = 2;
        m->sinusoid.shape[0] = cfg->max_seq;
        m->sinusoid.shape[1] = d;
        m->sinusoid.shape[2] = m->sinusoid.shape[3] = 1;
        m->sinusoid.size = (long)cfg->max_seq * d;
        m->sinusoid.data = sd_calloc((size_t)m->sinusoid.size, sizeof(float));
        for (int t = 0; t < cfg->max_seq; t++)
            for (int i = 0; i < d; i += 2) {
                float omega = expf((float)i * (-logf(10000.0f) / (float)d));
                float angle = (float)t * omega;
                m->sinusoid.data[t * d + i] = sinf(angle);
                if (i + 1 < d) m->sinusoid.data[t * d + i + 1] = cosf(angle);
            }
        m->pos = &m->sinusoid;
    }

    m->blocks = sd_calloc((size_t)cfg->n_layers, sizeof *m->blocks);
    for (int l = 0; l < cfg->n_layers; l++) {
        TransformerBlock *b = &m->blocks[l];
        if (cfg->layernorm) {
            b->ln1_w = add_param(ps, ROLE_NORM, d, 0, "blocks.%d.ln1.%s", l, "weight");
            b->ln1_b = add_param(ps, ROLE_NORM, d, 0, "blocks.%d.ln1.%s", l, "bias");
            b->ln2_w = add_param(ps, ROLE_NORM, d, 0, "blocks.%d.ln2.%s", l, "weight");
            b->ln2_b = add_param(ps, ROLE_NORM, d, 0, "blocks.%d.ln2.%s", l, "bias");
            init_constant(b->ln1_w, 1.0f);
            init_constant(b->ln2_w, 1.0f);
        }
        b->wq = add_param(ps, ROLE_ATTN_Q, d, d, "blocks.%d.attn.wq.%s", l, "weight");
        b->bq = add_param(ps, ROLE_BIAS, d, 0, "blocks.%d.attn.wq.%s", l, "bias");
        b->wk = add_param(ps, ROLE_ATTN_K, d, d, "blocks.%d.attn.wk.%s", l, "weight");
        b->bk = add_param(ps, ROLE_BIAS, d, 0, "blocks.%d.attn.wk.%s", l, "bias");
        b->wv = add_param(ps, ROLE_ATTN_V, d, d, "blocks.%d.attn.wv.%s", l, "weight");
        b->bv = add_param(ps, ROLE_BIAS, d, 0, "blocks.%d.attn.wv.%s", l, "bias");
        b->wo = add_param(ps, ROLE_ATTN_O, d, d, "blocks.%d.attn.wo.%s", l, "weight");
        b->bo = add_param(ps, ROLE_BIAS, d, 0, "blocks.%d.attn.wo.%s", l, "bias");
        b->w1 = add_param(ps, ROLE_MLP_IN, f, d, "blocks.%d.mlp.w1.%s", l, "weight");
        b->b1 = add_param(ps, ROLE_BIAS, f, 0, "blocks.%d.mlp.w1.%s", l, "bias");
        b->w2 = add_param(ps, ROLE_MLP_OUT, d, f, "blocks.%d.mlp.w2.%s", l, "weight");
        b->b2 = add_param(ps, ROLE_BIAS, d, 0, "blocks.%d.mlp.w2.%s", l, "bias");
        /* nn.MultiheadAttention: packed in_proj xavier_uniform, zero in/out biases,
         * out_proj with the nn.Linear default weight. */
        Tensor *qkv[3] = {b->wq, b->wk, b->wv};
        init_xavier_uniform_stacked(qkv, 3, g);
        init_linear_default(b->wo, NULL, g);
        init_linear_default(b->w1, b->b1, g);
        init_linear_default(b->w2, b->b2, g);
    }

    m->unembed_w = params_add(ps, "unembed.weight", ROLE_OUTPUT, 2, (int[]){v, d});
    m->unembed_b = params_add(ps, "unembed.bias", ROLE_BIAS, 1, (int[]){v});
    init_uniform(m->unembed_w, g, -0.1f, 0.1f);
}

void transformer_free(Transformer *m) {
    free(m->sinusoid.data);
    free(m->blocks);
    memset(m, 0, sizeof *m);
}

static Tensor *maybe_norm(Graph *g, Tensor *x, Tensor *w, Tensor *b) {
    return w ? op_layernorm(g, x, w, b, 1e-5f) : x;
}

/* MLP half of a block: x + W2 act(W1 norm(x) + b1) + b2. */
static Tensor *mlp_residual(const Transformer *m, const TransformerBlock *b, Graph *g, Tensor *x) {
    Tensor *h = op_linear(g, maybe_norm(g, x, b->ln2_w, b->ln2_b), b->w1, b->b1);
    h = m->cfg.gelu ? op_gelu(g, h) : op_relu(g, h);
    return op_add(g, x, op_linear(g, h, b->w2, b->b2));
}

/* Index of (token, position) in the [V, Tmax]-shaped token table, per input. */
static int *table_indices(Graph *g, const int *tokens, int batch, int seq, int first, int count, int max_seq) {
    int *idx = arena_alloc(&g->arena, (size_t)batch * count * sizeof(int));
    for (int b = 0; b < batch; b++)
        for (int t = 0; t < count; t++) idx[b * count + t] = tokens[b * seq + first + t] * max_seq + first + t;
    return idx;
}

Tensor *transformer_forward_last(Transformer *m, Graph *g, const int *tokens, int batch, int seq) {
    const TransformerConfig *c = &m->cfg;
    CHECK(seq >= 1 && seq <= c->max_seq, "sequence length %d outside [1, %d]", seq, c->max_seq);
    int d = c->d_model;
    float emb_scale = sqrtf((float)d);
    /* Before the first attention every position is a function of its
     * (token, position) pair alone. When there are fewer such pairs than
     * inputs (small vocabularies and large batches, as in modular arithmetic)
     * the first block's norm and Q, K, V projections are computed once per
     * pair and gathered, which is the same arithmetic on fewer rows. */
    int use_table = c->vocab * c->max_seq < batch * seq;
    Tensor *x = NULL;
    Tensor *table = NULL;
    if (use_table) {
        int *grid = arena_alloc(&g->arena, (size_t)c->vocab * c->max_seq * sizeof(int));
        for (int v = 0; v < c->vocab; v++)
            for (int t = 0; t < c->max_seq; t++) grid[v * c->max_seq + t] = v;
        table = op_embedding(g, m->embed, grid, c->vocab, c->max_seq, emb_scale);
        table = op_add_position(g, table, m->pos);
    } else {
        x = op_embedding(g, m->embed, tokens, batch, seq, emb_scale);
        x = op_add_position(g, x, m->pos);
    }
    for (int l = 0; l < c->n_layers; l++) {
        const TransformerBlock *b = &m->blocks[l];
        int last_block = l == c->n_layers - 1;
        /* Only the last position feeds the logits, so the final block needs
         * queries, attention output and MLP there alone. Keys and values still
         * cover every position. */
        int tq = last_block ? 1 : seq;
        Tensor *q, *k, *v, *residual;
        if (l == 0 && use_table) {
            int rows = c->vocab * c->max_seq;
            Tensor *flat = tensor_reshape(&g->arena, table, 2, (int[]){rows, d});
            Tensor *h = maybe_norm(g, flat, b->ln1_w, b->ln1_b);
            int *all = table_indices(g, tokens, batch, seq, 0, seq, c->max_seq);
            int *queries = table_indices(g, tokens, batch, seq, seq - tq, tq, c->max_seq);
            q = op_embedding(g, op_linear(g, h, b->wq, b->bq), queries, batch, tq, 1.0f);
            k = op_embedding(g, op_linear(g, h, b->wk, b->bk), all, batch, seq, 1.0f);
            v = op_embedding(g, op_linear(g, h, b->wv, b->bv), all, batch, seq, 1.0f);
            residual = op_embedding(g, flat, queries, batch, tq, 1.0f);
        } else {
            Tensor *h = maybe_norm(g, x, b->ln1_w, b->ln1_b);
            Tensor *hq = last_block ? op_take_last(g, h, 1) : h;
            q = op_linear(g, hq, b->wq, b->bq);
            k = op_linear(g, h, b->wk, b->bk);
            v = op_linear(g, h, b->wv, b->bv);
            residual = tq == seq ? x : op_take_last(g, x, tq);
        }
        Tensor *a = op_attention(g, q, k, v, c->n_heads, 1);
        x = op_add(g, residual, op_linear(g, a, b->wo, b->bo));
        x = mlp_residual(m, b, g, x);
    }
    Tensor *last = tensor_reshape(&g->arena, x, 2, (int[]){batch, d});
    return op_linear(g, last, m->unembed_w, m->unembed_b);
}

static void add_pair(LayerPair *out, int *n, int max, const char *from, const char *to, int from_t, int to_t,
                     int head, int heads) {
    CHECK(*n < max, "more than %d layer pairs", max);
    LayerPair *p = &out[(*n)++];
    memset(p, 0, sizeof *p);
    snprintf(p->from, sizeof p->from, "%s", from);
    snprintf(p->to, sizeof p->to, "%s", to);
    p->from_transposed = from_t;
    p->to_transposed = to_t;
    p->head = head;
    p->heads = heads;
}

int transformer_pairs(const Transformer *m, LayerPair *out, int max) {
    int n = 0;
    char prev[PARAM_NAME_MAX] = "embed.weight";
    int prev_t = 1; /* the embedding table is (token, D): its D side is its right vectors */
    static const char *const qkv[3] = {"wq", "wk", "wv"};
    for (int l = 0; l < m->cfg.n_layers; l++) {
        char name[PARAM_NAME_MAX], other[PARAM_NAME_MAX];
        for (int i = 0; i < 3; i++) {
            snprintf(name, sizeof name, "blocks.%d.attn.%s.weight", l, qkv[i]);
            add_pair(out, &n, max, prev, name, prev_t, 0, -1, 0);
        }
        /* Scores are q·k = x Wq_hᵀ Wk_h x': per head, Wk_h's output space
         * meets Wq_hᵀ's input space, which is spanned by Wq_h's left vectors. */
        snprintf(name, sizeof name, "blocks.%d.attn.wk.weight", l);
        snprintf(other, sizeof other, "blocks.%d.attn.wq.weight", l);
        for (int h = 0; h < m->cfg.n_heads; h++) add_pair(out, &n, max, name, other, 0, 1, h, m->cfg.n_heads);
        snprintf(name, sizeof name, "blocks.%d.attn.wv.weight", l);
        snprintf(other, sizeof other, "blocks.%d.attn.wo.weight", l);
        add_pair(out, &n, max, name, other, 0, 0, -1, 0);
        snprintf(name, sizeof name, "blocks.%d.mlp.w1.weight", l);
        add_pair(out, &n, max, other, name, 0, 0, -1, 0);
        snprintf(other, sizeof other, "blocks.%d.mlp.w2.weight", l);
        add_pair(out, &n, max, name, other, 0, 0, -1, 0);
        snprintf(prev, sizeof prev, "%s", other);
        prev_t = 0;
    }
    add_pair(out, &n, max, prev, "unembed.weight", prev_t, 0, -1, 0);
    return n;
}
