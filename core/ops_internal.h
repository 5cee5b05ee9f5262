/* Shared between the op files and the tape: backward functions and the
 * shape check used when an op is recorded. Not part of the public API. */
#ifndef SD_OPS_INTERNAL_H
#define SD_OPS_INTERNAL_H

#include <assert.h>

#include "error.h"
#include "graph.h"

typedef void (*BackwardFn)(TapeEntry *e);

void linear_backward(TapeEntry *e);
void linear_onehot_backward(TapeEntry *e);
void matmul_backward(TapeEntry *e);
void add_backward(TapeEntry *e);
void add_bias_backward(TapeEntry *e);
void mul_backward(TapeEntry *e);
void scale_backward(TapeEntry *e);
void relu_backward(TapeEntry *e);
void gelu_backward(TapeEntry *e);
void embedding_backward(TapeEntry *e);
void add_position_backward(TapeEntry *e);
void take_last_backward(TapeEntry *e);
void attention_backward(TapeEntry *e);
void layernorm_backward(TapeEntry *e);
void cross_entropy_backward(TapeEntry *e);
void mse_backward(TapeEntry *e);
void conv2d_backward(TapeEntry *e);
void max_pool2d_backward(TapeEntry *e);
void avg_pool2d_backward(TapeEntry *e);
void global_avg_pool_backward(TapeEntry *e);
void batchnorm_backward(TapeEntry *e);
void dropout_backward(TapeEntry *e);

/* table[ids[i]] += scale · src[i / group] for i in [0, n), over rows of d
 * floats, in a fixed order that does not depend on the thread count. */
void scatter_add_rows(float *table, const int *ids, long n, int group, const float *src, int d, float scale);

/* Abort with the op name, the failed condition and the shapes of up to three tensors. */
void shape_check_failed(const char *file, int line, const char *op, const char *cond,
                        const Tensor *a, const Tensor *b, const Tensor *c) __attribute__((noreturn));

#define SHAPE_CHECK(cond, op, a, b, c)                                        \
    do {                                                                      \
        if (!(cond)) shape_check_failed(__FILE__, __LINE__, op, #cond, a, b, c); \
    } while (0)

/* Elementwise loops use OpenMP only above this many elements: below it the
 * fork/join cost exceeds the work. */
#define PARALLEL_MIN 32768

/* Write a gradient element: dst[i] = v when store (the buffer was unset),
 * dst[i] += v otherwise. The branch is loop-invariant. */
#define GRAD_PUT(store, dst, i, v) ((store) ? (void)((dst)[i] = (v)) : (void)((dst)[i] += (v)))

/* Allocate an op output, with an unset gradient (see tensor_grad_claim) when needs_grad. */
Tensor *op_output(Graph *g, int ndim, const int *shape, int needs_grad);

#endif
