/* Tensors, arena and parameter store; see tensor.h. */
#include "tensor.h"

#include <stdlib.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "error.h"

const char *const param_role_names[ROLE_COUNT] = {
    [ROLE_WEIGHT] = "weight",     [ROLE_EMBEDDING] = "embedding", [ROLE_ATTN_Q] = "attn_q",
    [ROLE_ATTN_K] = "attn_k",     [ROLE_ATTN_V] = "attn_v",       [ROLE_ATTN_O] = "attn_o",
    [ROLE_MLP_IN] = "mlp_in",     [ROLE_MLP_OUT] = "mlp_out",     [ROLE_OUTPUT] = "output",
    [ROLE_BIAS] = "bias",         [ROLE_NORM] = "norm",
};

struct ArenaChunk {
    ArenaChunk *next;
    size_t cap;
    size_t used;
    unsigned char *mem;
};

#define ARENA_ALIGN 64

void arena_init(Arena *a, size_t default_chunk_bytes) {
    memset(a, 0, sizeof *a);
    a->default_chunk = default_chunk_bytes;
}

static ArenaChunk *chunk_new(size_t cap) {
    ArenaChunk *c = sd_calloc(1, sizeof *c);
    c->cap = cap;
    c->mem = aligned_alloc(ARENA_ALIGN, (cap + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN);
    if (!c->mem) sd_fail("out of memory allocating an arena chunk of %zu bytes", cap);
    return c;
}

void *arena_alloc(Arena *a, size_t bytes) {
    bytes = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (bytes == 0) bytes = ARENA_ALIGN;
    if (!a->first) {
        a->first = a->current = chunk_new(bytes > a->default_chunk ? bytes : a->default_chunk);
    }
    /* Walk forward from the current chunk to one with room; chunks after the
     * current one are empty after a reset. */
    while (a->current->cap - a->current->used < bytes) {
        if (!a->current->next) {
            size_t cap = bytes > a->default_chunk ? bytes : a->default_chunk;
            a->current->next = chunk_new(cap);
        }
        a->current = a->current->next;
        a->current->used = 0;
    }
    void *p = a->current->mem + a->current->used;
    a->current->used += bytes;
    a->in_use += bytes;
    if (a->in_use > a->high_water) a->high_water = a->in_use;
    return p;
}

void *arena_calloc(Arena *a, size_t bytes) {
    void *p = arena_alloc(a, bytes);
    memset(p, 0, bytes);
    return p;
}

void arena_reset(Arena *a) {
    for (ArenaChunk *c = a->first; c; c = c->next) c->used = 0;
    a->current = a->first;
    a->in_use = 0;
}

void arena_free(Arena *a) {
    ArenaChunk *c = a->first;
    while (c) {
        ArenaChunk *next = c->next;
        free(c->mem);
        free(c);
        c = next;
    }
    memset(a, 0, sizeof *a);
}

static long shape_size(int ndim, const int *shape) {
    CHECK(ndim >= 1 && ndim <= TENSOR_MAX_DIMS, "ndim %d", ndim);
    long n = 1;
    for (int i = 0; i < ndim; i++) {
        CHECK(shape[i] >= 1, "dimension %d is %d", i, shape[i]);
        n *= shape[i];
    }
    return n;
}

static void set_shape(Tensor *t, int ndim, const int *shape) {
    t->ndim = ndim;
    for (int i = 0; i < TENSOR_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->size = shape_size(ndim, shape);
}

Tensor *tensor_new(Arena *a, int ndim, const int *shape, int with_grad) {
    Tensor *t = arena_alloc(a, sizeof *t);
    set_shape(t, ndim, shape);
    t->data = arena_alloc(a, (size_t)t->size * sizeof(float));
    t->grad = with_grad ? arena_alloc(a, (size_t)t->size * sizeof(float)) : NULL;
    t->grad_unset = NULL;
    if (with_grad) {
        t->grad_unset = arena_alloc(a, 1);
        *t->grad_unset = 1;
        /* With SPECDYN_POISON_GRADS set (the tests set it) an unset gradient
         * starts as NaN, so a backward that adds to it without claiming it
         * first poisons every result downstream instead of reading stale memory. */
        static int poison = -1;
        if (poison < 0) poison = getenv("SPECDYN_POISON_GRADS") != NULL;
        if (poison)
            for (long i = 0; i < t->size; i++) t->grad[i] = NAN;
    }
    return t;
}

Tensor *tensor_reshape(Arena *a, const Tensor *t, int ndim, const int *shape) {
    Tensor *v = arena_alloc(a, sizeof *v);
    set_shape(v, ndim, shape);
    CHECK(v->size == t->size, "reshape of %ld elements to %ld", t->size, v->size);
    v->data = t->data;
    v->grad = t->grad;
    v->grad_unset = t->grad_unset;
    return v;
}

void tensor_grad_zero(Tensor *t) {
    memset(t->grad, 0, (size_t)t->size * sizeof(float));
    if (t->grad_unset) *t->grad_unset = 0;
}

void tensor_grad_claim_zeroed(Tensor *t) {
    if (tensor_grad_claim(t)) memset(t->grad, 0, (size_t)t->size * sizeof(float));
}

long tensor_rows(const Tensor *t) { return t->size / t->shape[t->ndim - 1]; }
int tensor_cols(const Tensor *t) { return t->shape[t->ndim - 1]; }

const char *tensor_shape_str(const Tensor *t, char *buf, size_t len) {
    size_t off = 0;
    off += (size_t)snprintf(buf + off, len - off, "[");
    for (int i = 0; i < t->ndim && off < len; i++)
        off += (size_t)snprintf(buf + off, len - off, i ? ", %d" : "%d", t->shape[i]);
    if (off < len) snprintf(buf + off, len - off, "]");
    return buf;
}

static Tensor *store_add(ParamStore *ps, const char *name, ParamRole role, int ndim, const int *shape,
                         int trainable) {
    if (ps->count >= PARAM_MAX) sd_fail("too many parameters (limit %d)", PARAM_MAX);
    if (strlen(name) >= PARAM_NAME_MAX) sd_fail("parameter name '%s' is too long", name);
    if (params_find(ps, name)) sd_fail("duplicate parameter name '%s'", name);
    Param *p = &ps->params[ps->count++];
    memset(p, 0, sizeof *p);
    snprintf(p->name, sizeof p->name, "%s", name);
    p->role = role;
    set_shape(&p->t, ndim, shape);
    p->t.data = sd_calloc((size_t)p->t.size, sizeof(float));
    p->t.grad = sd_calloc((size_t)p->t.size, sizeof(float));
    p->trainable = trainable;
    if (trainable) ps->total_size += p->t.size;
    return &p->t;
}

Tensor *params_add(ParamStore *ps, const char *name, ParamRole role, int ndim, const int *shape) {
    return store_add(ps, name, role, ndim, shape, 1);
}

Tensor *params_add_buffer(ParamStore *ps, const char *name, ParamRole role, int ndim, const int *shape) {
    return store_add(ps, name, role, ndim, shape, 0);
}

Param *params_find(ParamStore *ps, const char *name) {
    for (int i = 0; i < ps->count; i++)
        if (strcmp(ps->params[i].name, name) == 0) return &ps->params[i];
    return NULL;
}

void params_zero_grad(ParamStore *ps) {
    for (int i = 0; i < ps->count; i++)
        memset(ps->params[i].t.grad, 0, (size_t)ps->params[i].t.size * sizeof(float));
}

void params_free(ParamStore *ps) {
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        free(p->t.data);
        free(p->t.grad);
        free(p->state[0]);
        free(p->state[1]);
    }
    ps->count = 0;
    ps->total_size = 0;
}
