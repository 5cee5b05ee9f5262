/* conv2d through oneDNN 2.x (Debian libdnnl 2.6): forward, backward data and
 * backward weights with bias, on our plain NCHW / OIHW float tensors.
 *
 * When oneDNN has no implementation for a shape, conv_dnnl_forward and
 * conv_dnnl_backward_ready return 0, and the caller runs the im2col-GEMM
 * path of ops_conv.c instead. Primitives are cached per shape and thread
 * count, so only the first call of a shape pays for their creation. The
 * functions are not thread-safe: they share scratch buffers, which works
 * because ops run one at a time. */
#ifndef SD_CONV_DNNL_H
#define SD_CONV_DNNL_H

/* One conv2d call: x [n, c, h, w], w [o, c, kh, kw], y [n, o, oh, ow],
 * zero padding on every side, oh and ow in floor mode. */
typedef struct {
    int n, c, h, w;
    int o, kh, kw;
    int oh, ow;
    int stride, padding;
    int bias;            /* 1: the layer adds a bias b [o] */
} ConvDims;

/* Compute y = conv(x, w) + b, reading b only when d->bias is set. Returns
 * 1, or 0 without writing y when oneDNN has no implementation. */
int conv_dnnl_forward(const ConvDims *d, const float *x, const float *w, const float *b, float *y);

/* Create the backward primitives of d and return 1, or 0 when oneDNN has
 * none. Callers ask before they claim gradient buffers. */
int conv_dnnl_backward_ready(const ConvDims *d);

/* Gradient outputs of conv_dnnl_backward. A NULL buffer is not computed (dx)
 * or not returned (dw, db, which oneDNN computes together). Each result is
 * stored, or added to the buffer when its add flag is set. */
typedef struct {
    float *dx, *dw, *db;
    int dx_add, dw_add, db_add;
} ConvGrads;

/* Compute dx from w and dy, and dw and db from x and dy. Only for dims that
 * conv_dnnl_backward_ready accepted. */
void conv_dnnl_backward(const ConvDims *d, const float *x, const float *w, const float *dy, const ConvGrads *g);

/* For tests of the fallback: primitives created while forward (backward)
 * is set report no implementation for the forward (both backward) passes.
 * Shapes already cached keep what they had. */
void conv_dnnl_simulate_unimplemented(int forward, int backward);

#endif
