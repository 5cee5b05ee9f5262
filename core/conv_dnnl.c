/* conv2d through oneDNN 2.x primitives; see conv_dnnl.h.
 *
 * The primitives pick their own layouts (dnnl_format_tag_any), usually
 * blocked ones such as nChw16c and OIhw16i16o. Each operand is reordered
 * from our plain NCHW / OIHW tensor into that layout before a primitive
 * runs, and each result back afterwards, as PyTorch 1.13 does for NCHW float
 * tensors. The blocked copies live in scratch buffers, one per operand role
 * (source, weights, destination, bias, primitive scratchpad), shared by every
 * layer and grown to the largest layer's need. */
#include "conv_dnnl.h"

#include <oneapi/dnnl/dnnl.h>
#include <oneapi/dnnl/dnnl_debug.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* Primitive sets kept at once. A model has one per distinct layer shape and
 * batch size (training and evaluation batches differ), so 64 is ample. */
#define CONV_CACHE_MAX 64

typedef enum { SLOT_SRC, SLOT_WEIGHTS, SLOT_DST, SLOT_BIAS, SLOT_SCRATCHPAD, SLOT_COUNT } Slot;

static dnnl_engine_t engine;
static dnnl_stream_t stream;
static dnnl_primitive_attr_t user_scratchpad;   /* attributes of every primitive: the caller passes the scratchpad */
static dnnl_primitive_attr_t add_to_destination; /* the same plus a sum post-op, so dst += result */
static struct {
    void *data;
    size_t bytes;
} slots[SLOT_COUNT];

static void check(dnnl_status_t status, const char *call) {
    if (status != dnnl_success) sd_fail("oneDNN: %s failed: %s", call, dnnl_status2str(status));
}
#define DNNL_CHECK(f, ...) check(f(__VA_ARGS__), #f)

/* Create the CPU engine, the stream and the two attributes on first use. */
static void dnnl_setup(void) {
    if (engine) return;
    DNNL_CHECK(dnnl_engine_create, &engine, dnnl_cpu, 0);
    DNNL_CHECK(dnnl_stream_create, &stream, engine, dnnl_stream_default_flags);
    DNNL_CHECK(dnnl_primitive_attr_create, &user_scratchpad);
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode, user_scratchpad, dnnl_scratchpad_mode_user);
    DNNL_CHECK(dnnl_primitive_attr_create, &add_to_destination);
    DNNL_CHECK(dnnl_primitive_attr_set_scratchpad_mode, add_to_destination, dnnl_scratchpad_mode_user);
    dnnl_post_ops_t sum;
    DNNL_CHECK(dnnl_post_ops_create, &sum);
    DNNL_CHECK(dnnl_post_ops_append_sum, sum, 1.0f);
    DNNL_CHECK(dnnl_primitive_attr_set_post_ops, add_to_destination, sum);
    DNNL_CHECK(dnnl_post_ops_destroy, sum);
}

/* Scratch buffer of a slot with room for bytes, 64-byte aligned. */
static void *slot_buffer(Slot slot, size_t bytes) {
    if (bytes > slots[slot].bytes) {
        free(slots[slot].data);
        size_t rounded = (bytes + 63) / 64 * 64;
        if (posix_memalign(&slots[slot].data, 64, rounded) != 0)
            sd_fail("out of memory: conv2d scratch of %zu bytes", rounded);
        slots[slot].bytes = rounded;
    }
    return slots[slot].data;
}

/* ---- primitives with a caller-provided scratchpad -------------------------- */

typedef struct {
    dnnl_primitive_t prim;       /* NULL until created */
    dnnl_memory_t scratchpad;    /* NULL when the primitive needs none */
    size_t scratchpad_bytes;
} Prim;

static void prim_create(Prim *p, const_dnnl_primitive_desc_t pd) {
    DNNL_CHECK(dnnl_primitive_create, &p->prim, pd);
    const dnnl_memory_desc_t *md = dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    p->scratchpad_bytes = md ? dnnl_memory_desc_get_size(md) : 0;
    p->scratchpad = NULL;
    if (p->scratchpad_bytes) DNNL_CHECK(dnnl_memory_create, &p->scratchpad, md, engine, DNNL_MEMORY_NONE);
}

static void prim_destroy(Prim *p) {
    if (p->prim) DNNL_CHECK(dnnl_primitive_destroy, p->prim);
    if (p->scratchpad) DNNL_CHECK(dnnl_memory_destroy, p->scratchpad);
    memset(p, 0, sizeof *p);
}

/* Execute p and wait for it. args must have room for one more entry, the scratchpad. */
static void prim_run(const Prim *p, int nargs, dnnl_exec_arg_t *args) {
    if (p->scratchpad) {
        DNNL_CHECK(dnnl_memory_set_data_handle, p->scratchpad, slot_buffer(SLOT_SCRATCHPAD, p->scratchpad_bytes));
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SCRATCHPAD, p->scratchpad};
    }
    DNNL_CHECK(dnnl_primitive_execute, p->prim, stream, nargs, args);
    DNNL_CHECK(dnnl_stream_wait, stream);
}

static void reorder_create(Prim *p, const dnnl_memory_desc_t *from, const dnnl_memory_desc_t *to, int add) {
    dnnl_primitive_desc_t pd;
    DNNL_CHECK(dnnl_reorder_primitive_desc_create, &pd, from, engine, to, engine,
               add ? add_to_destination : user_scratchpad);
    prim_create(p, pd);
    DNNL_CHECK(dnnl_primitive_desc_destroy, pd);
}

/* ---- operands: a plain tensor and its copy in the primitive's layout ------- */

typedef struct {
    dnnl_memory_desc_t user_md;  /* our plain layout */
    dnnl_memory_desc_t prim_md;  /* the layout the primitive chose */
    int reordered;               /* 1: the layouts differ, so data goes through the slot's buffer */
    Slot slot;
    Prim reorder;                /* input: user to primitive layout; output: back */
    Prim reorder_add;            /* output only: primitive layout added to user; created on first use */
    dnnl_memory_t user_mem, prim_mem;
} Operand;

/* Set up the operand of pd named by (what, index), such as (dnnl_query_weights_md, 1) for the bias. */
static void operand_init(Operand *op, const dnnl_memory_desc_t *user_md, const_dnnl_primitive_desc_t pd,
                         dnnl_query_t what, int index, Slot slot, int output) {
    memset(op, 0, sizeof *op);
    op->user_md = *user_md;
    op->prim_md = *dnnl_primitive_desc_query_md(pd, what, index);
    op->reordered = !dnnl_memory_desc_equal(&op->user_md, &op->prim_md);
    op->slot = slot;
    DNNL_CHECK(dnnl_memory_create, &op->user_mem, &op->user_md, engine, DNNL_MEMORY_NONE);
    DNNL_CHECK(dnnl_memory_create, &op->prim_mem, &op->prim_md, engine, DNNL_MEMORY_NONE);
    if (op->reordered && output) reorder_create(&op->reorder, &op->prim_md, &op->user_md, 0);
    if (op->reordered && !output) reorder_create(&op->reorder, &op->user_md, &op->prim_md, 0);
}

static void operand_destroy(Operand *op) {
    prim_destroy(&op->reorder);
    prim_destroy(&op->reorder_add);
    if (op->user_mem) DNNL_CHECK(dnnl_memory_destroy, op->user_mem);
    if (op->prim_mem) DNNL_CHECK(dnnl_memory_destroy, op->prim_mem);
    memset(op, 0, sizeof *op);
}

/* Point the primitive-layout memory at the slot's buffer. A blocked layout
 * whose channel count is not a multiple of the block has padding that the
 * primitives expect to be zero. Every blocked input here comes out of a
 * oneDNN reorder, which writes that padding, because in oneDNN 2.6 setting
 * the handle does not zero it.
 * NOTE: a buffer filled any other way would need dnnl_impl_zero_pad first. */
static dnnl_memory_t operand_scratch(Operand *op) {
    DNNL_CHECK(dnnl_memory_set_data_handle, op->prim_mem, slot_buffer(op->slot, dnnl_memory_desc_get_size(&op->prim_md)));
    return op->prim_mem;
}

/* The memory a primitive reads for input data: data itself, or its reordered copy. */
static dnnl_memory_t operand_in(Operand *op, const float *data) {
    DNNL_CHECK(dnnl_memory_set_data_handle, op->user_mem, (void *)data);
    if (!op->reordered) return op->user_mem;
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, op->user_mem}, {DNNL_ARG_TO, operand_scratch(op)}};
    prim_run(&op->reorder, 2, args);
    return op->prim_mem;
}

/* The memory a primitive writes a result to: data itself when the result
 * is stored in the same layout, otherwise the slot's buffer. A NULL data
 * (result not wanted) also gets the slot's buffer. */
static dnnl_memory_t operand_out(Operand *op, float *data, int add) {
    if (data && !add && !op->reordered) {
        DNNL_CHECK(dnnl_memory_set_data_handle, op->user_mem, data);
        return op->user_mem;
    }
    return operand_scratch(op);
}

/* Move a result written by operand_out's memory into data: reorder it, or add it. */
static void operand_deliver(Operand *op, float *data, int add) {
    if (!data || (!add && !op->reordered)) return;
    if (add && !op->reorder_add.prim) reorder_create(&op->reorder_add, &op->prim_md, &op->user_md, 1);
    DNNL_CHECK(dnnl_memory_set_data_handle, op->user_mem, data);
    dnnl_exec_arg_t args[3] = {{DNNL_ARG_FROM, op->prim_mem}, {DNNL_ARG_TO, op->user_mem}};
    prim_run(add ? &op->reorder_add : &op->reorder, 2, args);
}

/* ---- the cache --------------------------------------------------------------- */

typedef enum { NOT_TRIED, READY, UNIMPLEMENTED } State;

typedef struct {
    ConvDims dims;
    int threads;                    /* oneDNN sizes its work split for the thread count at creation */
    State forward_state, backward_state;
    dnnl_primitive_desc_t forward_pd;   /* kept as the hint of the backward primitives */
    Prim forward;
    Operand src, weights, bias, dst;
    Prim backward_weights;
    Operand bw_src, bw_diff_weights, bw_diff_bias, bw_diff_dst;
    Prim backward_data;
    Operand bd_weights, bd_diff_dst, bd_diff_src;
} ConvEntry;

static ConvEntry *cache[CONV_CACHE_MAX];
static int cache_count, cache_next_evicted;

static void entry_destroy(ConvEntry *e) {
    Operand *operands[] = {&e->src, &e->weights, &e->bias, &e->dst, &e->bw_src, &e->bw_diff_weights,
                           &e->bw_diff_bias, &e->bw_diff_dst, &e->bd_weights, &e->bd_diff_dst, &e->bd_diff_src};
    for (size_t i = 0; i < sizeof operands / sizeof operands[0]; i++) operand_destroy(operands[i]);
    prim_destroy(&e->forward);
    prim_destroy(&e->backward_weights);
    prim_destroy(&e->backward_data);
    if (e->forward_pd) DNNL_CHECK(dnnl_primitive_desc_destroy, e->forward_pd);
    free(e);
}

/* The entry of d at the current thread count, new and empty if absent. When
 * the cache is full the entries are replaced in turn, oldest first. */
static ConvEntry *cache_entry(const ConvDims *d) {
    int threads = omp_get_max_threads();
    for (int i = 0; i < cache_count; i++)
        if (cache[i]->threads == threads && memcmp(&cache[i]->dims, d, sizeof *d) == 0) return cache[i];
    ConvEntry *e = sd_calloc(1, sizeof *e);
    e->dims = *d;
    e->threads = threads;
    if (cache_count < CONV_CACHE_MAX) {
        cache[cache_count++] = e;
    } else {
        entry_destroy(cache[cache_next_evicted]);
        cache[cache_next_evicted] = e;
        cache_next_evicted = (cache_next_evicted + 1) % CONV_CACHE_MAX;
    }
    return e;
}

/* ---- descriptors ------------------------------------------------------------- */

typedef struct {
    dnnl_memory_desc_t src, weights, bias, dst;             /* plain: nchw, oihw, a, nchw */
    dnnl_memory_desc_t any_src, any_weights, any_dst;       /* layout left to the primitive */
    dnnl_dims_t strides, padding_l, padding_r;
} ConvDescs;

static void md_init(dnnl_memory_desc_t *md, int ndims, const dnnl_dims_t dims, dnnl_format_tag_t tag) {
    DNNL_CHECK(dnnl_memory_desc_init_by_tag, md, ndims, dims, dnnl_f32, tag);
}

static void descs_init(ConvDescs *cd, const ConvDims *d) {
    dnnl_dims_t src = {d->n, d->c, d->h, d->w}, weights = {d->o, d->c, d->kh, d->kw}, bias = {d->o};
    dnnl_dims_t dst = {d->n, d->o, d->oh, d->ow};
    md_init(&cd->src, 4, src, dnnl_nchw);
    md_init(&cd->weights, 4, weights, dnnl_oihw);
    md_init(&cd->bias, 1, bias, dnnl_a);
    md_init(&cd->dst, 4, dst, dnnl_nchw);
    md_init(&cd->any_src, 4, src, dnnl_format_tag_any);
    md_init(&cd->any_weights, 4, weights, dnnl_format_tag_any);
    md_init(&cd->any_dst, 4, dst, dnnl_format_tag_any);
    cd->strides[0] = cd->strides[1] = d->stride;
    cd->padding_l[0] = cd->padding_l[1] = d->padding;
    /* Floor mode drops input rows and columns that no window reaches, so the
     * bottom and right padding oneDNN needs is what the last window covers,
     * possibly negative (oneDNN accepts down to 1 − stride). */
    cd->padding_r[0] = (dnnl_dim_t)(d->oh - 1) * d->stride + d->kh - d->h - d->padding;
    cd->padding_r[1] = (dnnl_dim_t)(d->ow - 1) * d->stride + d->kw - d->w - d->padding;
}

/* Create a primitive descriptor; return 0 when oneDNN has no implementation. */
static int pd_create(dnnl_primitive_desc_t *pd, const dnnl_convolution_desc_t *desc, const_dnnl_primitive_desc_t hint) {
    dnnl_status_t status = dnnl_primitive_desc_create(pd, desc, user_scratchpad, engine, hint);
    if (status == dnnl_unimplemented) return 0;
    check(status, "dnnl_primitive_desc_create");
    return 1;
}

typedef enum { FORWARD, BACKWARD_WEIGHTS, BACKWARD_DATA } Pass;

static int simulate_unimplemented[3];   /* indexed by Pass; see conv_dnnl_simulate_unimplemented */

void conv_dnnl_simulate_unimplemented(int forward, int backward) {
    simulate_unimplemented[FORWARD] = forward;
    simulate_unimplemented[BACKWARD_WEIGHTS] = simulate_unimplemented[BACKWARD_DATA] = backward;
}

static int pass_pd_create(dnnl_primitive_desc_t *pd, Pass pass, dnnl_alg_kind_t alg, const ConvDescs *cd, int bias,
                          const_dnnl_primitive_desc_t hint) {
    if (simulate_unimplemented[pass]) return 0;
    dnnl_convolution_desc_t desc;
    const dnnl_memory_desc_t *bias_md = bias ? &cd->bias : NULL;
    if (pass == FORWARD)
        DNNL_CHECK(dnnl_convolution_forward_desc_init, &desc, dnnl_forward_training, alg, &cd->any_src,
                   &cd->any_weights, bias_md, &cd->any_dst, cd->strides, cd->padding_l, cd->padding_r);
    else if (pass == BACKWARD_WEIGHTS)
        DNNL_CHECK(dnnl_convolution_backward_weights_desc_init, &desc, alg, &cd->any_src, &cd->any_weights, bias_md,
                   &cd->any_dst, cd->strides, cd->padding_l, cd->padding_r);
    else
        DNNL_CHECK(dnnl_convolution_backward_data_desc_init, &desc, alg, &cd->any_src, &cd->any_weights, &cd->any_dst,
                   cd->strides, cd->padding_l, cd->padding_r);
    return pd_create(pd, &desc, hint);
}

/* Winograd F(4×4, 3×3) (oneDNN's jit_wino_4x3) does 4× fewer
 * multiplications than the direct method but spends the saving on
 * transforms when the maps or channel counts are small. Its results differ from the reference path by about
 * 2e-6 of the max magnitude, direct convolution's by 6e-7
 * (tests/test_conv_dnnl.c).
 * NOTE: the bounds were measured on one machine: the VGG-16 layers at width
 * 0.25, a 2-core Zen 4 EPYC, oneDNN 2.6.3. There winograd took 0.4-0.75× the
 * direct time from 4 × 4 to 16 × 16 outputs with 16 to 128 channels. It took
 * 1.5-3× at 2 × 2 and with one input channel, and was mixed at 32 × 32. */
static int winograd_pays(const ConvDims *d) {
    return d->kh == 3 && d->kw == 3 && d->stride == 1 && d->c >= 16 && d->o >= 16 && d->oh >= 4 && d->ow >= 4 &&
           d->oh * d->ow <= 16 * 16;
}

/* A primitive descriptor for one pass: winograd where it pays and oneDNN
 * implements it, direct otherwise. Returns 0 when neither is implemented. */
static int pass_pd_choose(dnnl_primitive_desc_t *pd, Pass pass, const ConvDims *d, const ConvDescs *cd,
                          const_dnnl_primitive_desc_t hint) {
    if (winograd_pays(d) && pass_pd_create(pd, pass, dnnl_convolution_winograd, cd, d->bias, hint)) return 1;
    return pass_pd_create(pd, pass, dnnl_convolution_direct, cd, d->bias, hint);
}

static State forward_create(ConvEntry *e) {
    ConvDescs cd;
    descs_init(&cd, &e->dims);
    if (!pass_pd_choose(&e->forward_pd, FORWARD, &e->dims, &cd, NULL)) return UNIMPLEMENTED;
    prim_create(&e->forward, e->forward_pd);
    operand_init(&e->src, &cd.src, e->forward_pd, dnnl_query_src_md, 0, SLOT_SRC, 0);
    operand_init(&e->weights, &cd.weights, e->forward_pd, dnnl_query_weights_md, 0, SLOT_WEIGHTS, 0);
    if (e->dims.bias) operand_init(&e->bias, &cd.bias, e->forward_pd, dnnl_query_weights_md, 1, SLOT_BIAS, 0);
    operand_init(&e->dst, &cd.dst, e->forward_pd, dnnl_query_dst_md, 0, SLOT_DST, 1);
    return READY;
}

static State backward_create(ConvEntry *e) {
    ConvDescs cd;
    descs_init(&cd, &e->dims);
    dnnl_primitive_desc_t pd;
    if (!pass_pd_choose(&pd, BACKWARD_WEIGHTS, &e->dims, &cd, e->forward_pd)) return UNIMPLEMENTED;
    prim_create(&e->backward_weights, pd);
    operand_init(&e->bw_src, &cd.src, pd, dnnl_query_src_md, 0, SLOT_SRC, 0);
    operand_init(&e->bw_diff_dst, &cd.dst, pd, dnnl_query_diff_dst_md, 0, SLOT_DST, 0);
    operand_init(&e->bw_diff_weights, &cd.weights, pd, dnnl_query_diff_weights_md, 0, SLOT_WEIGHTS, 1);
    if (e->dims.bias) operand_init(&e->bw_diff_bias, &cd.bias, pd, dnnl_query_diff_weights_md, 1, SLOT_BIAS, 1);
    DNNL_CHECK(dnnl_primitive_desc_destroy, pd);

    if (!pass_pd_choose(&pd, BACKWARD_DATA, &e->dims, &cd, e->forward_pd)) return UNIMPLEMENTED;
    prim_create(&e->backward_data, pd);
    operand_init(&e->bd_weights, &cd.weights, pd, dnnl_query_weights_md, 0, SLOT_WEIGHTS, 0);
    operand_init(&e->bd_diff_dst, &cd.dst, pd, dnnl_query_diff_dst_md, 0, SLOT_DST, 0);
    operand_init(&e->bd_diff_src, &cd.src, pd, dnnl_query_diff_src_md, 0, SLOT_SRC, 1);
    DNNL_CHECK(dnnl_primitive_desc_destroy, pd);
    return READY;
}

/* The entry of d with its forward primitive, or NULL when oneDNN has none. */
static ConvEntry *forward_entry(const ConvDims *d) {
    dnnl_setup();
    ConvEntry *e = cache_entry(d);
    if (e->forward_state == NOT_TRIED) e->forward_state = forward_create(e);
    return e->forward_state == READY ? e : NULL;
}

static ConvEntry *backward_entry(const ConvDims *d) {
    ConvEntry *e = forward_entry(d);
    if (!e) return NULL;
    if (e->backward_state == NOT_TRIED) e->backward_state = backward_create(e);
    return e->backward_state == READY ? e : NULL;
}

/* ---- execution ----------------------------------------------------------------- */

int conv_dnnl_forward(const ConvDims *d, const float *x, const float *w, const float *b, float *y) {
    ConvEntry *e = forward_entry(d);
    if (!e) return 0;
    dnnl_exec_arg_t args[5];
    int nargs = 0;
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, operand_in(&e->src, x)};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, operand_in(&e->weights, w)};
    if (d->bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_BIAS, operand_in(&e->bias, b)};
    args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DST, operand_out(&e->dst, y, 0)};
    prim_run(&e->forward, nargs, args);
    operand_deliver(&e->dst, y, 0);
    return 1;
}

int conv_dnnl_backward_ready(const ConvDims *d) { return backward_entry(d) != NULL; }

void conv_dnnl_backward(const ConvDims *d, const float *x, const float *w, const float *dy, const ConvGrads *g) {
    ConvEntry *e = backward_entry(d);
    CHECK(e, "conv_dnnl_backward called for a shape that conv_dnnl_backward_ready rejected");
    dnnl_exec_arg_t args[6];
    dnnl_memory_t staged_dy = NULL;
    if (g->dw || g->db) {
        int nargs = 0;
        staged_dy = operand_in(&e->bw_diff_dst, dy);
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_SRC, operand_in(&e->bw_src, x)};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, staged_dy};
        args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_WEIGHTS, operand_out(&e->bw_diff_weights, g->dw, g->dw_add)};
        if (d->bias) args[nargs++] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_BIAS, operand_out(&e->bw_diff_bias, g->db, g->db_add)};
        prim_run(&e->backward_weights, nargs, args);
        operand_deliver(&e->bw_diff_weights, g->dw, g->dw_add);
        if (d->bias) operand_deliver(&e->bw_diff_bias, g->db, g->db_add);
    }
    if (!g->dx) return;
    /* dy as staged for the weights gradient serves again when both primitives chose the same layout for it. */
    if (!staged_dy || !dnnl_memory_desc_equal(&e->bd_diff_dst.prim_md, &e->bw_diff_dst.prim_md))
        staged_dy = operand_in(&e->bd_diff_dst, dy);
    args[0] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_DST, staged_dy};
    args[1] = (dnnl_exec_arg_t){DNNL_ARG_WEIGHTS, operand_in(&e->bd_weights, w)};
    args[2] = (dnnl_exec_arg_t){DNNL_ARG_DIFF_SRC, operand_out(&e->bd_diff_src, g->dx, g->dx_add)};
    prim_run(&e->backward_data, 3, args);
    operand_deliver(&e->bd_diff_src, g->dx, g->dx_add);
}
