/* Decoder-style Transformer over token sequences: token embedding scaled by
 * √D plus sinusoidal or learned positions, n_layers pre-LN blocks (LayerNorm
 * optional: the grokking experiments remove it), causal multi-head
 * attention with separate Wq, Wk, Wv, Wo, a two-layer MLP, and a linear
 * unembedding. This is PyTorch's nn.TransformerEncoderLayer(norm_first=True,
 * dropout=0) stack with the initialisation that layer uses; the embedding and
 * unembedding start uniform(−0.1, 0.1) with a zero unembedding bias.
 *
 * Parameter names: embed.weight [V, D], pos.weight [Tmax, D] (learned only),
 * blocks.L.ln1.{weight,bias} [D], blocks.L.attn.{wq,wk,wv,wo}.{weight [D, D],
 * bias [D]}, blocks.L.ln2.{weight,bias}, blocks.L.mlp.w1.{weight [F, D],
 * bias [F]}, blocks.L.mlp.w2.{weight [D, F], bias [D]}, unembed.{weight
 * [V, D], bias [V]}. */
#ifndef SD_TRANSFORMER_H
#define SD_TRANSFORMER_H

#include "graph.h"
#include "rng.h"

typedef struct {
    int vocab;        /* V: input tokens and output classes */
    int max_seq;      /* Tmax: longest sequence */
    int d_model;      /* D */
    int n_heads;      /* divides D */
    int d_mlp;        /* F */
    int n_layers;
    int layernorm;    /* 1: LayerNorm before attention and MLP (eps 1e-5) */
    int learned_pos;  /* 1: learned positions; 0: fixed sinusoids */
    int gelu;         /* 1: GELU in the MLP; 0: ReLU */
} TransformerConfig;

typedef struct {
    Tensor *ln1_w, *ln1_b, *wq, *bq, *wk, *bk, *wv, *bv, *wo, *bo;
    Tensor *ln2_w, *ln2_b, *w1, *b1, *w2, *b2;
} TransformerBlock;

typedef struct {
    TransformerConfig cfg;
    Tensor *embed, *pos, *unembed_w, *unembed_b;
    Tensor sinusoid;              /* [Tmax, D] constant table when !learned_pos; data owned here */
    TransformerBlock *blocks;     /* [n_layers], owned */
} Transformer;

/* Register every parameter in ps and initialise it from g. */
void transformer_init(Transformer *m, const TransformerConfig *cfg, ParamStore *ps, Rng *g);
void transformer_free(Transformer *m);

/* Logits [B, V] at the last position of each sequence tokens[B, T]
 * (T <= Tmax). The last block computes attention queries, the MLP and the
 * unembedding for the last position only, which gives the same logits as
 * the full computation followed by selecting the last position. */
Tensor *transformer_forward_last(Transformer *m, Graph *g, const int *tokens, int batch, int seq);

/* Consecutive layer pairs in the order of the computation: embedding → Wq,
 * Wk, Wv; Wk → Wq per head (the query/key product); Wv → Wo; Wo → W1;
 * W1 → W2; W2 → the next block's Wq, Wk, Wv, or → unembedding after the
 * last block. Returns the count written to out (at most max). */
int transformer_pairs(const Transformer *m, LayerPair *out, int max);

#endif
