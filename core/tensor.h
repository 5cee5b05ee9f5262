/* Tensors, the step arena and the parameter store.
 *
 * A Tensor is float32, contiguous and row-major with up to four dimensions,
 * read as (N, C, H, W) or (B, T, D) by the op that uses it. Its data and
 * gradient live either in the parameter store (for the whole run) or in an
 * Arena that is reset after every optimiser step, so a training step in the
 * steady state performs no malloc. */
#ifndef SD_TENSOR_H
#define SD_TENSOR_H

#include <stddef.h>

#define TENSOR_MAX_DIMS 4

typedef struct Tensor {
    float *data;                 /* [size] */
    float *grad;                 /* [size]; NULL when no gradient flows into this tensor */
    unsigned char *grad_unset;   /* arena tensors: shared flag, 1 while grad has no value yet
                                  * (the first backward to reach it stores instead of adding,
                                  * which saves zero-filling); NULL: grad is always valid */
    int ndim;
    int shape[TENSOR_MAX_DIMS];  /* shape[0..ndim-1]; unused entries are 1 */
    long size;                   /* product of the shape */
} Tensor;

/* Bump allocator made of chunks. arena_reset() keeps the chunks, so after the
 * first step every allocation is served from memory already obtained. */
typedef struct ArenaChunk ArenaChunk;
typedef struct {
    ArenaChunk *first;
    ArenaChunk *current;
    size_t default_chunk;        /* bytes per new chunk unless a request is larger */
    size_t high_water;           /* largest total bytes in use since creation */
    size_t in_use;
} Arena;

void arena_init(Arena *a, size_t default_chunk_bytes);
/* Return 64-byte aligned memory valid until the next arena_reset(). Never NULL. */
void *arena_alloc(Arena *a, size_t bytes);
/* Like arena_alloc, zero-filled. */
void *arena_calloc(Arena *a, size_t bytes);
void arena_reset(Arena *a);
void arena_free(Arena *a);

/* A new arena tensor of the given shape with uninitialised data. with_grad
 * also allocates a gradient, marked unset (read it only after a backward
 * pass has reached the tensor, or call tensor_grad_zero first). */
Tensor *tensor_new(Arena *a, int ndim, const int *shape, int with_grad);
/* A view of t with another shape of the same size, sharing data and grad. */
Tensor *tensor_reshape(Arena *a, const Tensor *t, int ndim, const int *shape);
/* Zero t's gradient and mark it valid, so that backward passes add to it. */
void tensor_grad_zero(Tensor *t);
/* Claim t's gradient for a backward write: return 1 when it has no value
 * yet, so the caller must store rather than add, and 0 when it must add. */
static inline int tensor_grad_claim(Tensor *t) {
    if (t->grad_unset && *t->grad_unset) {
        *t->grad_unset = 0;
        return 1;
    }
    return 0;
}
/* Claim t's gradient for an accumulating write, zero-filling it if unset. */
void tensor_grad_claim_zeroed(Tensor *t);
/* Number of rows when t is seen as a matrix [size / last_dim, last_dim]. */
long tensor_rows(const Tensor *t);
int tensor_cols(const Tensor *t);
/* "[3, 4, 5]" into buf, for error messages. */
const char *tensor_shape_str(const Tensor *t, char *buf, size_t len);

/* Parameter roles, recorded in trace/layers.json and used to pick the output
 * layer (excluded from low-rank cuts) and weight-decay groups. */
typedef enum {
    ROLE_WEIGHT,      /* a generic matrix: MLP hidden layer, input layer */
    ROLE_EMBEDDING,   /* token or position table [V, D] */
    ROLE_ATTN_Q,
    ROLE_ATTN_K,
    ROLE_ATTN_V,
    ROLE_ATTN_O,
    ROLE_MLP_IN,
    ROLE_MLP_OUT,
    ROLE_OUTPUT,      /* the last linear layer, producing logits */
    ROLE_BIAS,        /* vectors: biases */
    ROLE_NORM,        /* vectors: normalisation gains and shifts */
    ROLE_COUNT
} ParamRole;

extern const char *const param_role_names[ROLE_COUNT];

#define PARAM_NAME_MAX 64
#define PARAM_MAX 1024

typedef struct {
    char name[PARAM_NAME_MAX];   /* dotted PyTorch-style name, e.g. "blocks.0.attn.wq.weight" */
    ParamRole role;
    Tensor t;                    /* data and grad owned by the store */
    int trainable;               /* 1: a parameter; 0: a buffer (batch-norm running statistics),
                                  * saved in checkpoints but skipped by the optimiser */
    float *state[2];             /* optimiser state: momentum buffer or (exp_avg, exp_avg_sq); NULL until used */
} Param;

typedef struct {
    Param params[PARAM_MAX];     /* fixed capacity, so Tensor pointers stay valid */
    int count;
    long total_size;             /* elements of trainable parameters; buffers excluded */
} ParamStore;

/* Add a zero-initialised parameter with a zeroed gradient and return its
 * tensor. Names must be unique; exits on a duplicate or a full store. */
Tensor *params_add(ParamStore *ps, const char *name, ParamRole role, int ndim, const int *shape);
/* Add a zero-initialised buffer: persistent state that is checkpointed like a
 * parameter but never updated by the optimiser (trainable = 0). Its gradient
 * is allocated and stays zero, so code that walks every entry's grad works. */
Tensor *params_add_buffer(ParamStore *ps, const char *name, ParamRole role, int ndim, const int *shape);
/* Two consecutive layers whose singular vectors are compared: the output
 * space of `from` against the input space of `to`. For a weight stored
 * (out, in) the output space is spanned by its left singular vectors and the
 * input space by its right ones; an embedding table stored (token, D) is
 * the transpose of its linear map, so from_transposed picks its right
 * vectors instead. With head >= 0 both matrices are cut to rows
 * head·(m/heads) .. (head+1)·(m/heads) first (attention heads). */
typedef struct {
    char from[PARAM_NAME_MAX];
    char to[PARAM_NAME_MAX];
    int from_transposed;  /* output space of `from` = its right singular vectors */
    int to_transposed;    /* input space of `to` = its left singular vectors */
    int head, heads;      /* head < 0: whole matrices */
} LayerPair;

#define LAYER_PAIRS_MAX 256

/* Find a parameter by name; NULL when absent. */
Param *params_find(ParamStore *ps, const char *name);
/* Set every parameter's gradient to zero. */
void params_zero_grad(ParamStore *ps);
/* Free data, gradients and optimiser state of every parameter. */
void params_free(ParamStore *ps);

#endif
