/* conv2d through oneDNN 2.x (Debian libdnnl 2.6): forward, backward data and
 * backward weights with bias, on our plain NCHW / OIHW float tensors.
 *
 * Each call returns 1 when it wrote its outputs and 0 when oneDNN has no
 * implementation for the shape; the caller then runs the im2col-GEMM path of
 * ops_conv.c. Primitives are cached per shape and thread count, so only the
 * first call of a shape pays for their creation. Not thread-safe: ops run one
 * at a time, and the calls share their scratch buffers. */
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

/* y = conv(x, w) + b; b is read only when d->bias is set. */
int conv_dnnl_forward(const ConvDims *d, const float *x, const float *w, const float *b, float *y);

/* Create the backward primitives of d, so that a caller can learn whether
 * oneDNN implements them before it claims gradient buffers. */
int conv_dnnl_backward_ready(const ConvDims *d);

/* Gradient outputs of conv_dnnl_backward. A NULL buffer is not computed (dx)
 * or not returned (dw, db, which oneDNN computes together). Each result is
 * stored, or added to the buffer when its add flag is set. */
typedef struct {
    float *dx, *dw, *db;
    int dx_add, dw_add, db_add;
} ConvGrads;

/* dx from w and dy; dw and db from x and dy. Only for dims that
 * conv_dnnl_backward_ready accepted. */
void conv_dnnl_backward(const ConvDims *d, const float *x, const float *w, const float *dy, const ConvGrads *g);

#endif
