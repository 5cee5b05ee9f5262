/* Image classifiers; see convnet.h. */
#include "convnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "init.h"
#include "ops.h"

#define BN_MOMENTUM 0.1f
#define BN_EPS 1e-5f
#define POOL 0   /* marks a 2×2 max pool in a VGG layer list */
/* Module prefixes stay short enough for ".running_mean" to fit in PARAM_NAME_MAX. */
#define PREFIX_MAX 48

/* VGG conv widths before the multiplier (torchvision's configurations A, B, D, E). */
static const int VGG11[] = {64, POOL, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL, -1};
static const int VGG13[] = {64, 64, POOL, 128, 128, POOL, 256, 256, POOL, 512, 512, POOL, 512, 512, POOL, -1};
static const int VGG16[] = {64, 64, POOL, 128, 128, POOL, 256, 256, 256, POOL, 512, 512, 512, POOL,
                            512, 512, 512, POOL, -1};
static const int VGG19[] = {64, 64, POOL, 128, 128, POOL, 256, 256, 256, 256, POOL, 512, 512, 512, 512, POOL,
                            512, 512, 512, 512, POOL, -1};

static int scaled(int channels, double width) {
    long c = lround((double)channels * width);
    return c < 1 ? 1 : (int)c;
}

static ConvLayer *next_layer(ConvNet *m) {
    m->layers = sd_realloc(m->layers, (size_t)(m->n_layers + 1) * sizeof *m->layers);
    ConvLayer *l = &m->layers[m->n_layers++];
    memset(l, 0, sizeof *l);
    return l;
}

/* Register prefix.weight [out, in, k, k] (k = 0: a linear [out, in]) and, with bias, prefix.bias. */
static ConvLayer *add_weight(ConvNet *m, ParamStore *ps, Rng *g, const char *prefix, int out, int in, int k,
                             int bias, ParamRole role) {
    ConvLayer *l = next_layer(m);
    char name[PARAM_NAME_MAX];
    snprintf(l->name, sizeof l->name, "%s.weight", prefix);
    l->w = k ? params_add(ps, l->name, role, 4, (int[]){out, in, k, k}) : params_add(ps, l->name, role, 2, (int[]){out, in});
    if (bias) {
        snprintf(name, sizeof name, "%s.bias", prefix);
        l->b = params_add(ps, name, ROLE_BIAS, 1, (int[]){out});
    }
    init_linear_default(l->w, l->b, g);
    l->stride = 1;
    return l;
}

/* Register prefix.{weight, bias, running_mean, running_var} [c] of a batch norm on l. */
static void add_batchnorm(ConvLayer *l, ParamStore *ps, const char *prefix, int c) {
    char name[PARAM_NAME_MAX];
    snprintf(name, sizeof name, "%s.weight", prefix);
    l->bn_gamma = params_add(ps, name, ROLE_NORM, 1, (int[]){c});
    snprintf(name, sizeof name, "%s.bias", prefix);
    l->bn_beta = params_add(ps, name, ROLE_NORM, 1, (int[]){c});
    snprintf(name, sizeof name, "%s.running_mean", prefix);
    l->bn_mean = params_add_buffer(ps, name, ROLE_NORM, 1, (int[]){c});
    snprintf(name, sizeof name, "%s.running_var", prefix);
    l->bn_var = params_add_buffer(ps, name, ROLE_NORM, 1, (int[]){c});
    init_constant(l->bn_gamma, 1.0f);
    init_constant(l->bn_var, 1.0f);
}

static int init_lenet(ConvNet *m, ParamStore *ps, Rng *g, char *err, size_t errlen) {
    const ConvNetConfig *c = &m->cfg;
    int c1 = scaled(6, c->width), c2 = scaled(16, c->width), f1 = scaled(120, c->width), f2 = scaled(84, c->width);
    /* conv1 pads by 2 (28 → 28 for MNIST-sized inputs), each 2×2 pool halves, conv2 (5×5, no padding) takes 4. */
    int side = c->image_size / 2 - 4;
    side /= 2;
    if (side < 1) {
        snprintf(err, errlen, "lenet needs images of at least 12 pixels; [task] image_size is %d", c->image_size);
        return -1;
    }
    ConvLayer *l = add_weight(m, ps, g, "conv1", c1, c->channels, 5, 1, ROLE_WEIGHT);
    l->padding = 2;
    l->pool_after = 1;
    l = add_weight(m, ps, g, "conv2", c2, c1, 5, 1, ROLE_WEIGHT);
    l->pool_after = 1;
    add_weight(m, ps, g, "fc1", f1, c2 * side * side, 0, 1, ROLE_WEIGHT);
    add_weight(m, ps, g, "fc2", f2, f1, 0, 1, ROLE_WEIGHT);
    add_weight(m, ps, g, "fc3", c->classes, f2, 0, 1, ROLE_OUTPUT);
    return 0;
}

static int init_vgg(ConvNet *m, const int *plan, ParamStore *ps, Rng *g, char *err, size_t errlen) {
    const ConvNetConfig *c = &m->cfg;
    int in = c->channels, side = c->image_size, index = 0;
    char prefix[PREFIX_MAX];
    for (const int *v = plan; *v >= 0; v++) {
        if (*v == POOL) {
            m->layers[m->n_layers - 1].pool_after = 1;
            side /= 2;
            index++;
            continue;
        }
        int out = scaled(*v, c->width);
        snprintf(prefix, sizeof prefix, "features.%d", index);
        ConvLayer *l = add_weight(m, ps, g, prefix, out, in, 3, 1, ROLE_WEIGHT);
        l->padding = 1;
        snprintf(prefix, sizeof prefix, "features.%d", index + 1);
        add_batchnorm(l, ps, prefix, out);
        index += 3; /* conv, batch norm, ReLU */
        in = out;
    }
    if (side < 1) {
        snprintf(err, errlen, "%s pools five times and needs images of at least 32 pixels; [task] image_size is %d",
                 c->arch, c->image_size);
        return -1;
    }
    add_weight(m, ps, g, "classifier", c->classes, in * side * side, 0, 1, ROLE_OUTPUT);
    return 0;
}

/* Layer slots: [0] stem, then per block b: [1 + 3b] conv1, [2 + 3b] conv2,
 * [3 + 3b] shortcut (w NULL for the identity), and the fc layer last. */
#define RESNET_BLOCKS 9

static void init_resnet20(ConvNet *m, ParamStore *ps, Rng *g) {
    const ConvNetConfig *c = &m->cfg;
    int in = scaled(16, c->width);
    ConvLayer *l = add_weight(m, ps, g, "conv1", in, c->channels, 3, 0, ROLE_WEIGHT);
    l->padding = 1;
    add_batchnorm(l, ps, "bn1", in);
    char prefix[PREFIX_MAX], bn[PREFIX_MAX];
    for (int stage = 0; stage < 3; stage++) {
        int out = scaled(16 << stage, c->width);
        for (int b = 0; b < 3; b++) {
            int stride = stage > 0 && b == 0 ? 2 : 1;
            snprintf(prefix, sizeof prefix, "layer%d.%d.conv1", stage + 1, b);
            snprintf(bn, sizeof bn, "layer%d.%d.bn1", stage + 1, b);
            l = add_weight(m, ps, g, prefix, out, in, 3, 0, ROLE_WEIGHT);
            l->stride = stride;
            l->padding = 1;
            add_batchnorm(l, ps, bn, out);
            snprintf(prefix, sizeof prefix, "layer%d.%d.conv2", stage + 1, b);
            snprintf(bn, sizeof bn, "layer%d.%d.bn2", stage + 1, b);
            l = add_weight(m, ps, g, prefix, out, out, 3, 0, ROLE_WEIGHT);
            l->padding = 1;
            add_batchnorm(l, ps, bn, out);
            if (stride != 1 || in != out) {
                snprintf(prefix, sizeof prefix, "layer%d.%d.shortcut.0", stage + 1, b);
                snprintf(bn, sizeof bn, "layer%d.%d.shortcut.1", stage + 1, b);
                l = add_weight(m, ps, g, prefix, out, in, 1, 0, ROLE_WEIGHT);
                l->stride = stride;
                add_batchnorm(l, ps, bn, out);
            } else {
                next_layer(m);
            }
            in = out;
        }
    }
    add_weight(m, ps, g, "fc", c->classes, in, 0, 1, ROLE_OUTPUT);
}

int convnet_init(ConvNet *m, const ConvNetConfig *cfg, ParamStore *ps, Rng *g, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    const char *arch = cfg->arch;
    if (strcmp(arch, "lenet") == 0) {
        m->kind = CONVNET_LENET;
        return init_lenet(m, ps, g, err, errlen);
    }
    if (strcmp(arch, "resnet20") == 0) {
        m->kind = CONVNET_RESNET20;
        init_resnet20(m, ps, g);
        return 0;
    }
    if (strcmp(arch, "mlp") == 0) {
        m->kind = CONVNET_MLP;
        mlp_init(&m->mlp, cfg->channels * cfg->image_size * cfg->image_size, cfg->hidden, cfg->depth, cfg->classes, ps, g);
        return 0;
    }
    static const struct {
        const char *name;
        const int *plan;
    } vggs[] = {{"vgg11", VGG11}, {"vgg13", VGG13}, {"vgg16", VGG16}, {"vgg19", VGG19}};
    for (size_t i = 0; i < sizeof vggs / sizeof vggs[0]; i++)
        if (strcmp(arch, vggs[i].name) == 0) {
            m->kind = CONVNET_VGG;
            return init_vgg(m, vggs[i].plan, ps, g, err, errlen);
        }
    snprintf(err, errlen, "[model] arch = %s: not an image classifier (lenet, vgg11, vgg13, vgg16, vgg19, resnet20, mlp)",
             arch);
    return -1;
}

void convnet_free(ConvNet *m) {
    free(m->layers);
    if (m->kind == CONVNET_MLP) mlp_free(&m->mlp);
    memset(m, 0, sizeof *m);
}

/* conv → batch norm (if any); no activation. */
static Tensor *conv_bn(Graph *g, const ConvLayer *l, Tensor *x) {
    x = op_conv2d(g, x, l->w, l->b, l->stride, l->padding);
    if (l->bn_gamma) x = op_batchnorm(g, x, l->bn_gamma, l->bn_beta, l->bn_mean, l->bn_var, BN_MOMENTUM, BN_EPS);
    return x;
}

static Tensor *flatten(Graph *g, Tensor *x) {
    return tensor_reshape(&g->arena, x, 2, (int[]){x->shape[0], (int)(x->size / x->shape[0])});
}

/* lenet and vgg: conv layers, then linear layers with ReLU between them. */
static Tensor *forward_sequential(ConvNet *m, Graph *g, Tensor *x) {
    for (int i = 0; i < m->n_layers; i++) {
        const ConvLayer *l = &m->layers[i];
        if (l->w->ndim == 4) {
            x = op_relu(g, conv_bn(g, l, x));
            if (l->pool_after) x = op_max_pool2d(g, x, 2, 2, 0);
            continue;
        }
        if (x->ndim == 4) x = flatten(g, x);
        if (i == m->n_layers - 1) {
            x = op_dropout(g, x, m->cfg.dropout);
            return op_linear(g, x, l->w, l->b);
        }
        x = op_relu(g, op_linear(g, x, l->w, l->b));
    }
    return x;
}

static Tensor *forward_resnet20(ConvNet *m, Graph *g, Tensor *x) {
    x = op_relu(g, conv_bn(g, &m->layers[0], x));
    for (int b = 0; b < RESNET_BLOCKS; b++) {
        const ConvLayer *conv1 = &m->layers[1 + 3 * b], *conv2 = &m->layers[2 + 3 * b], *shortcut = &m->layers[3 + 3 * b];
        Tensor *h = op_relu(g, conv_bn(g, conv1, x));
        h = conv_bn(g, conv2, h);
        Tensor *identity = shortcut->w ? conv_bn(g, shortcut, x) : x;
        x = op_relu(g, op_add(g, h, identity));
    }
    x = op_global_avg_pool(g, x);
    x = op_dropout(g, x, m->cfg.dropout);
    const ConvLayer *fc = &m->layers[m->n_layers - 1];
    return op_linear(g, x, fc->w, fc->b);
}

Tensor *convnet_forward(ConvNet *m, Graph *g, Tensor *x) {
    CHECK(x->ndim == 4 && x->shape[1] == m->cfg.channels && x->shape[2] == m->cfg.image_size &&
              x->shape[3] == m->cfg.image_size,
          "%s expects images [N, %d, %d, %d]", m->cfg.arch, m->cfg.channels, m->cfg.image_size, m->cfg.image_size);
    switch (m->kind) {
    case CONVNET_MLP: return mlp_forward(&m->mlp, g, flatten(g, x));
    case CONVNET_RESNET20: return forward_resnet20(m, g, x);
    case CONVNET_LENET:
    case CONVNET_VGG: break;
    }
    return forward_sequential(m, g, x);
}

int convnet_pairs(const ConvNet *m, LayerPair *out, int max) {
    if (m->kind == CONVNET_MLP) return mlp_pairs(&m->mlp, out, max);
    int n = 0;
    const ConvLayer *prev = NULL;
    for (int i = 0; i < m->n_layers; i++) {
        const ConvLayer *l = &m->layers[i];
        /* resnet20: the shortcut slot sits beside the main path, which runs conv1 → conv2 → next conv1. */
        if (!l->w || strstr(l->name, "shortcut")) continue;
        int in_dim = (int)(l->w->size / l->w->shape[0]);
        if (prev && prev->w->shape[0] == in_dim && n < max) {
            LayerPair *p = &out[n++];
            memset(p, 0, sizeof *p);
            snprintf(p->from, sizeof p->from, "%s", prev->name);
            snprintf(p->to, sizeof p->to, "%s", l->name);
            p->head = -1;
        }
        prev = l;
    }
    return n;
}
