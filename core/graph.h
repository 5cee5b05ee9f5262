/* Reverse-mode automatic differentiation on a tape.
 *
 * Each op appends one TapeEntry (its kind, inputs, output and whatever its
 * backward needs) while g->recording is set; graph_backward() walks the tape
 * in reverse and calls each op's backward. A backward writes input gradients
 * through tensor_grad_claim(): the first write to a fresh arena tensor stores,
 * later ones add, and an op that writes only part of a gradient zero-fills it
 * first with tensor_grad_claim_zeroed(). Parameter gradients always add;
 * zeroing them is the explicit params_zero_grad().
 * With recording off (evaluation) ops allocate no gradients and tape nothing.
 * All op outputs live in the graph's arena until graph_reset(). */
#ifndef SD_GRAPH_H
#define SD_GRAPH_H

#include <stdio.h>

#include "rng.h"
#include "tensor.h"

typedef enum {
    OP_LINEAR,
    OP_LINEAR_ONEHOT,
    OP_MATMUL,
    OP_ADD,
    OP_ADD_BIAS,
    OP_MUL,
    OP_SCALE,
    OP_RELU,
    OP_GELU,
    OP_EMBEDDING,
    OP_ADD_POSITION,
    OP_TAKE_LAST,
    OP_ATTENTION,
    OP_LAYERNORM,
    OP_CROSS_ENTROPY,
    OP_MSE,
    OP_CONV2D,
    OP_MAX_POOL2D,
    OP_AVG_POOL2D,
    OP_GLOBAL_AVG_POOL,
    OP_BATCHNORM,
    OP_DROPOUT,
    OP_COUNT
} OpKind;

/* Name of an op kind, for messages. */
const char *op_name(OpKind op);

#define TAPE_MAX_INPUTS 4

typedef struct {
    OpKind op;
    Tensor *out;
    Tensor *in[TAPE_MAX_INPUTS];  /* unused slots are NULL */
    int iarg[4];                  /* op-specific integers (heads, causal flag, ...) */
    float farg[2];                /* op-specific scalars (scale, eps) */
    void *saved;                  /* op-specific arena buffer (indices, statistics, probabilities) */
    void *saved2;
} TapeEntry;

typedef struct {
    Arena arena;
    TapeEntry *tape;
    int n, cap;
    int recording;                /* 1: ops allocate gradients and record themselves */
    int training;                 /* 1: batch norm uses and updates batch statistics and dropout
                                   * drops; 0: evaluation (running statistics, no dropout) */
    Rng rng;                      /* random stream of dropout and data augmentation; the trainer
                                   * reseeds it per micro-batch from (seed, step) so a resumed run
                                   * draws the same numbers */
    long bn_average_count;        /* > 0: training-mode batch norm sets its running statistics to
                                   * the average over batches 1 .. count (momentum 1 / count, as
                                   * PyTorch's momentum = None); 0: the layer's own momentum */
} Graph;

/* Start an empty graph: recording and training on, rng seeded from (0, 0). */
void graph_init(Graph *g);
/* Forget the tape and release every arena tensor (keeps the memory). */
void graph_reset(Graph *g);
void graph_free(Graph *g);

/* Append an entry for op with output out; returns it so the op can fill
 * inputs and saved state. Only called when g->recording is set. */
TapeEntry *graph_record(Graph *g, OpKind op, Tensor *out);

/* True when an op's output needs a gradient: recording is on and some input has one. */
int graph_needs_grad(const Graph *g, const Tensor *a, const Tensor *b, const Tensor *c);

/* Seed d(loss)/d(loss) = 1 for a one-element loss and run every recorded
 * backward in reverse order. */
void graph_backward(Graph *g, Tensor *loss);

/* Backward from any recorded output with d(objective)/d(out) = seed
 * [out->size]; the objective is then Σ seed ⊙ out (used by gradient checks). */
void graph_backward_seeded(Graph *g, Tensor *out, const float *seed);

/* Print per-op forward and backward seconds when the environment variable
 * SPECDYN_PROFILE is set; otherwise print nothing. */
void graph_profile_report(FILE *out);

#endif
