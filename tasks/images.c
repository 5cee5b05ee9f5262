/* Image classification: a training set and the test set as validation split,
 * one of the classifiers of models/convnet.h, softmax cross-entropy.
 *
 * Pixels are scaled to [0, 1] and normalised per channel with the mean and
 * standard deviation of the (kept) training images. With task.augment set,
 * training images in training mode get a random crop with zero padding
 * S/8 (applied before normalisation, like torchvision's RandomCrop) and a
 * horizontal flip with probability 1/2, drawn from g->rng, which the trainer
 * reseeds per micro-batch. Label randomisation, label noise and the training
 * subset are drawn once from the run's seed. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "convnet.h"
#include "error.h"
#include "image_data.h"
#include "ops.h"
#include "rng.h"
#include "task.h"

/* Batches with fewer pixels than this are converted on one thread. */
#define PARALLEL_PIXELS_MIN 32768

#define FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"
#define MAX_CHANNELS 3

typedef struct {
    ImageSet train, val;
    float mean[MAX_CHANNELS], std[MAX_CHANNELS];  /* per channel, on the [0, 1] scale */
    int augment;
    ConvNet net;
} Images;

/* path/name.gz when it exists, else path/name (IDX files come either way). */
static void idx_path(char *buf, size_t len, const char *dir, const char *name) {
    snprintf(buf, len, "%s/%s.gz", dir, name);
    FILE *f = fopen(buf, "rb");
    if (f) {
        fclose(f);
        return;
    }
    snprintf(buf, len, "%s/%s", dir, name);
}

static int load_sets(const Config *cfg, Images *m, char *err, size_t errlen) {
    const char *dir = cfg->data_path[0] ? cfg->data_path : NULL;
    if (strcmp(cfg->dataset, "fashion_mnist") == 0 || strcmp(cfg->dataset, "mnist") == 0) {
        if (!dir && strcmp(cfg->dataset, "mnist") == 0) {
            snprintf(err, errlen, "[task] dataset = mnist needs path: the directory of the IDX files");
            return -1;
        }
        if (!dir) dir = FASHION_MNIST_DIR;
        char images[4200], labels[4200];
        idx_path(images, sizeof images, dir, "train-images-idx3-ubyte");
        idx_path(labels, sizeof labels, dir, "train-labels-idx1-ubyte");
        if (idx_load(images, labels, &m->train, err, errlen) != 0) return -1;
        idx_path(images, sizeof images, dir, "t10k-images-idx3-ubyte");
        idx_path(labels, sizeof labels, dir, "t10k-labels-idx1-ubyte");
        return idx_load(images, labels, &m->val, err, errlen);
    }
    if (strcmp(cfg->dataset, "cifar10") == 0 || strcmp(cfg->dataset, "cifar100") == 0) {
        int fine = strcmp(cfg->dataset, "cifar100") == 0;
        char paths[6][4200];
        const char *train_paths[5];
        int n_train = fine ? 1 : 5;
        for (int i = 0; i < n_train; i++) {
            if (fine)
                snprintf(paths[i], sizeof paths[i], "%s/train.bin", dir);
            else
                snprintf(paths[i], sizeof paths[i], "%s/data_batch_%d.bin", dir, i + 1);
            train_paths[i] = paths[i];
        }
        snprintf(paths[5], sizeof paths[5], "%s/%s", dir, fine ? "test.bin" : "test_batch.bin");
        const char *test_path = paths[5];
        if (cifar_load(train_paths, n_train, fine, &m->train, err, errlen) != 0) return -1;
        return cifar_load(&test_path, 1, fine, &m->val, err, errlen);
    }
    char train_dir[4200], test_dir[4200];
    snprintf(train_dir, sizeof train_dir, "%s/train", dir);
    snprintf(test_dir, sizeof test_dir, "%s/test", dir);
    char **names = NULL;
    if (folder_load(train_dir, cfg->image_size, NULL, 0, &m->train, &names, err, errlen) != 0) return -1;
    int rc = folder_load(test_dir, cfg->image_size, names, m->train.classes, &m->val, NULL, err, errlen);
    image_class_names_free(names, m->train.classes);
    return rc;
}

static void channel_statistics(Images *m) {
    const ImageSet *s = &m->train;
    long plane = (long)s->height * s->width;
    for (int c = 0; c < s->channels; c++) {
        double sum = 0.0, sq = 0.0;
        for (long i = 0; i < s->n; i++) {
            const unsigned char *p = s->pixels + ((size_t)i * s->channels + c) * plane;
            for (long j = 0; j < plane; j++) {
                double v = p[j] / 255.0;
                sum += v;
                sq += v * v;
            }
        }
        double count = (double)s->n * (double)plane, mean = sum / count;
        double var = sq / count - mean * mean;
        m->mean[c] = (float)mean;
        /* A constant channel would divide by zero; leave it unscaled. */
        m->std[c] = var > 1e-12 ? (float)sqrt(var) : 1.0f;
    }
}

static long argmax_row(const float *row, int n) {
    long best = 0;
    for (int j = 1; j < n; j++)
        if (row[j] > row[best]) best = j;
    return best;
}

static Tensor *images_forward(Task *t, Graph *g, Split split, const long *idx, long n, long *correct) {
    Images *m = t->impl;
    const ImageSet *s = split == SPLIT_TRAIN ? &m->train : &m->val;
    int c = s->channels, side = s->height;
    long plane = (long)side * side;
    Tensor *x = tensor_new(&g->arena, 4, (int[]){(int)n, c, side, side}, 0);
    int *labels = arena_alloc(&g->arena, (size_t)n * sizeof(int));
    int augment = m->augment && split == SPLIT_TRAIN && g->training;
    int pad = side / 8;
    /* The augmentation draws come first, in sample order, so the pixel loop can run in parallel. */
    int *shifts = arena_alloc(&g->arena, (size_t)n * 3 * sizeof(int));
    for (long i = 0; i < n; i++) {
        labels[i] = s->labels[idx[i]];
        shifts[3 * i] = shifts[3 * i + 1] = shifts[3 * i + 2] = 0;
        if (augment) {
            shifts[3 * i] = (int)rng_below(&g->rng, (uint64_t)(2 * pad + 1)) - pad;
            shifts[3 * i + 1] = (int)rng_below(&g->rng, (uint64_t)(2 * pad + 1)) - pad;
            shifts[3 * i + 2] = (int)rng_below(&g->rng, 2);
        }
    }
#pragma omp parallel for schedule(static) if (n * c * plane > PARALLEL_PIXELS_MIN)
    for (long i = 0; i < n; i++) {
        const unsigned char *src = s->pixels + (size_t)idx[i] * c * plane;
        int shift_y = shifts[3 * i], shift_x = shifts[3 * i + 1], flip = shifts[3 * i + 2];
        for (int ch = 0; ch < c; ch++) {
            float *dst = x->data + ((size_t)i * c + ch) * plane;
            const unsigned char *plane_src = src + ch * plane;
            float mean = m->mean[ch], inv_std = 1.0f / m->std[ch];
            if (!shift_y && !shift_x && !flip) {
                for (long k = 0; k < plane; k++) dst[k] = (plane_src[k] / 255.0f - mean) * inv_std;
                continue;
            }
            for (int yy = 0; yy < side; yy++)
                for (int xx = 0; xx < side; xx++) {
                    int sy = yy + shift_y, sx = (flip ? side - 1 - xx : xx) + shift_x;
                    float v = sy >= 0 && sy < side && sx >= 0 && sx < side ? plane_src[sy * side + sx] / 255.0f : 0.0f;
                    dst[yy * side + xx] = (v - mean) * inv_std;
                }
        }
    }
    Tensor *logits = convnet_forward(&m->net, g, x);
    int classes = tensor_cols(logits);
    long hits = 0;
    for (long i = 0; i < n; i++) hits += argmax_row(logits->data + i * classes, classes) == labels[i];
    *correct += hits;
    return op_cross_entropy(g, logits, labels);
}

static void images_free(Task *t) {
    Images *m = t->impl;
    imageset_free(&m->train);
    imageset_free(&m->val);
    convnet_free(&m->net);
    free(m);
    free(t);
}

static Task *fail(Images *m, Task *t) {
    imageset_free(&m->train);
    imageset_free(&m->val);
    free(m);
    free(t);
    return NULL;
}

Task *images_task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen) {
    Images *m = sd_calloc(1, sizeof *m);
    if (load_sets(cfg, m, err, errlen) != 0) {
        /* Name the config keys that chose the files; the loader's message names the file. */
        char detail[1024];
        snprintf(detail, sizeof detail, "%s", err);
        if (strncmp(detail, "[task]", 6) != 0)
            snprintf(err, errlen, "[task] dataset = %s, path = %s: %s%s", cfg->dataset,
                     cfg->data_path[0] ? cfg->data_path : "(the dataset's default)", detail,
                     strstr(detail, "-ubyte'") ? " (also tried with .gz)" : "");
        return fail(m, NULL);
    }
    if (m->train.channels != m->val.channels || m->train.height != m->val.height || m->train.width != m->val.width) {
        snprintf(err, errlen, "[task] dataset = %s: training images are %dx%dx%d but test images %dx%dx%d", cfg->dataset,
                 m->train.channels, m->train.height, m->train.width, m->val.channels, m->val.height, m->val.width);
        return fail(m, NULL);
    }
    if (m->train.height != m->train.width && cfg->image_size == 0) {
        snprintf(err, errlen, "[task] dataset = %s has %dx%d images; set image_size to resize them to a square",
                 cfg->dataset, m->train.height, m->train.width);
        return fail(m, NULL);
    }
    if (m->val.classes > m->train.classes) m->train.classes = m->val.classes;
    m->val.classes = m->train.classes;
    if (m->train.classes < 2) {
        snprintf(err, errlen, "[task] dataset = %s: the training labels name %d class; need at least 2", cfg->dataset,
                 m->train.classes);
        return fail(m, NULL);
    }
    imageset_resize(&m->train, cfg->image_size);
    imageset_resize(&m->val, cfg->image_size);
    if (cfg->train_subset > m->train.n) {
        snprintf(err, errlen, "[task] train_subset = %ld exceeds the %ld training images of %s", cfg->train_subset,
                 m->train.n, cfg->dataset);
        return fail(m, NULL);
    }
    if (cfg->train_subset > 0) imageset_keep_subset(&m->train, cfg->train_subset, cfg->seed);
    imageset_corrupt_labels(&m->train, cfg->random_labels, cfg->label_noise, cfg->seed);
    channel_statistics(m);
    m->augment = cfg->augment;

    ConvNetConfig nc = {
        .arch = cfg->arch,
        .channels = m->train.channels,
        .image_size = m->train.height,
        .classes = m->train.classes,
        .width = cfg->width,
        .dropout = (float)cfg->dropout,
        .hidden = cfg->hidden,
        .depth = cfg->depth,
    };
    Rng init_rng;
    rng_seed(&init_rng, (uint64_t)cfg->seed, RNG_STREAM_INIT);
    if (convnet_init(&m->net, &nc, ps, &init_rng, err, errlen) != 0) {
        convnet_free(&m->net);
        return fail(m, NULL);
    }

    Task *t = sd_calloc(1, sizeof *t);
    t->name = "images";
    t->n_train = m->train.n;
    t->n_val = m->val.n;
    /* A convolutional activation of 256 images at 32 x 32 with 64 channels is 64 MB. */
    t->eval_batch = 256;
    t->forward = images_forward;
    t->free = images_free;
    t->impl = m;
    t->n_pairs = convnet_pairs(&m->net, t->pairs, LAYER_PAIRS_MAX);
    return t;
}
