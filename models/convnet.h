/* Image classifiers: LeNet-5, VGG-11/13/16/19 with batch norm (CIFAR
 * variant), ResNet-20 (CIFAR) and an MLP on flattened images.
 *
 * Inputs are x [N, C, S, S] (channels C, square images of side S); outputs
 * are logits [N, classes]. Conv kernels are [O, C, KH, KW] and traced as
 * O × (C·KH·KW). Every layer uses PyTorch's default initialisation
 * (nn.Conv2d and nn.Linear: U(±1/√fan_in) for weight and bias; nn.BatchNorm:
 * gamma 1, beta 0, running mean 0, running variance 1).
 *
 * Parameter names follow the usual PyTorch modules:
 *   lenet     conv1, conv2 (5×5, 6w and 16w channels, conv1 padded by 2),
 *             fc1 (120w), fc2 (84w), fc3 (classes); ReLU and 2×2 max pooling
 *   vggXX     features.i (nn.Sequential of conv 3×3 pad 1 with bias, BN,
 *             ReLU, 2×2 max pool), then classifier: linear 512w·(S/32)² → classes
 *   resnet20  conv1, bn1, layer{1,2,3}.{0,1,2}.{conv1,bn1,conv2,bn2}, with a
 *             projection shortcut (option B: 1×1 conv stride 2 + BN, names
 *             layerL.0.shortcut.{0,1}) where the shape changes; no conv bias;
 *             global average pool; fc
 *   mlp       layers.i (models/mlp.h) on the flattened C·S·S input
 * w is the width multiplier; batch-norm statistics are store buffers
 * (…running_mean, …running_var). */
#ifndef SD_CONVNET_H
#define SD_CONVNET_H

#include "graph.h"
#include "mlp.h"
#include "rng.h"

typedef enum { CONVNET_LENET, CONVNET_VGG, CONVNET_RESNET20, CONVNET_MLP } ConvNetKind;

typedef struct {
    const char *arch;   /* "lenet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20" or "mlp" */
    int channels;       /* C of the input images */
    int image_size;     /* S */
    int classes;
    double width;       /* channel multiplier; each layer keeps at least one channel */
    float dropout;      /* probability before the last linear layer (lenet, vgg, resnet20); 0 disables */
    int hidden, depth;  /* mlp only */
} ConvNetConfig;

/* One conv or linear layer with its optional batch norm. */
typedef struct {
    Tensor *w, *b;                              /* w [O, C, KH, KW] or [O, in]; b [O] or NULL */
    Tensor *bn_gamma, *bn_beta, *bn_mean, *bn_var; /* [O]; NULL without batch norm */
    int stride, padding;
    int pool_after;                             /* vgg: 2×2 max pool after the ReLU */
    char name[PARAM_NAME_MAX];                  /* weight name, for layer pairs */
} ConvLayer;

typedef struct {
    ConvNetKind kind;
    ConvNetConfig cfg;
    ConvLayer *layers;   /* [n_layers], owned: lenet/vgg in order; resnet20 see convnet.c */
    int n_layers;
    Mlp mlp;             /* CONVNET_MLP only */
} ConvNet;

/* Register and initialise the parameters in ps from g. Returns 0, or -1 with
 * a message in err for an unknown arch or an image too small for it. */
int convnet_init(ConvNet *m, const ConvNetConfig *cfg, ParamStore *ps, Rng *g, char *err, size_t errlen);
void convnet_free(ConvNet *m);
/* Logits [N, classes] for images x [N, C, S, S]; batch norm and dropout
 * follow g->training. */
Tensor *convnet_forward(ConvNet *m, Graph *g, Tensor *x);
/* Consecutive layer pairs whose dimensions match: the output channels of a
 * layer equal the input dimension of the next traced matrix. Conv → conv
 * pairs never match (O against C·KH·KW) and are left out; linear → linear
 * pairs and conv → linear where the linear layer sees one position per
 * channel (vgg at S = 32, resnet20 after global pooling) remain. Returns the
 * count written to out (at most max). */
int convnet_pairs(const ConvNet *m, LayerPair *out, int max);

#endif
