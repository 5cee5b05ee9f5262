/* Run configuration: INI files (parsed with libinih) plus "section.key=value"
 * command-line overrides, validated against one schema table.
 *
 * Every key has a type, a default and a valid range; config_load() rejects an
 * unknown section or key (suggesting the nearest valid one), a malformed value
 * and an out-of-range value, naming the file, line and key. Checks that span
 * several keys (for example d_model divisible by n_heads) are in
 * config_validate(). The resolved configuration, every key with its value,
 * is written by config_write() and reads back to an identical Config. */
#ifndef SD_CONFIG_H
#define SD_CONFIG_H

#include <stddef.h>

#define CONFIG_STR 128
#define CONFIG_MAX_MILESTONES 16

typedef struct {
    /* [run] */
    char run_name[CONFIG_STR];     /* run directory name under out_dir; default "", which the caller replaces with the config file's base name */
    char out_dir[CONFIG_STR];      /* parent of run directories, default "runs" */
    long seed;                     /* >= 0 */
    int threads;                   /* 1..256: OpenMP and OpenBLAS threads */

    /* [task] */
    char task[CONFIG_STR];         /* "modular" or "images" */
    int p;                         /* modulus, 3..1000 */
    char op[CONFIG_STR];           /* "add", "sub", "mul" */
    double train_frac;             /* in (0, 1) */
    char dataset[CONFIG_STR];      /* images: "fashion_mnist", "mnist", "cifar10", "cifar100", "folder" */
    char data_path[CONFIG_STR];    /* images: data directory; "" means the dataset's default */
    int image_size;                /* images: side S after resizing, 0..1024; 0 keeps the stored size */
    int augment;                   /* bool: random crop (padding S/8) and horizontal flip of training images */
    int random_labels;             /* bool: every training label drawn uniformly at random, fixed by the seed */
    double label_noise;            /* in [0, 1]: probability that a training label is redrawn uniformly */
    long train_subset;             /* >= 0: training examples kept (a seeded sample); 0 keeps all */

    /* [model] */
    char arch[CONFIG_STR];         /* "transformer", "mlp", "lenet", "vgg11", "vgg13", "vgg16", "vgg19", "resnet20" */
    int d_model;                   /* transformer width, >= 1 */
    int n_heads;                   /* >= 1, divides d_model */
    int d_mlp;                     /* transformer MLP width, >= 1 */
    int n_layers;                  /* transformer blocks, >= 1 */
    int layernorm;                 /* bool: LayerNorm before attention and MLP when true */
    char positional[CONFIG_STR];   /* "sinusoidal" or "learned" */
    char activation[CONFIG_STR];   /* "relu" or "gelu" */
    int hidden;                    /* MLP hidden width, >= 1 */
    int depth;                     /* MLP hidden layers, >= 1 */
    double width;                  /* image classifiers: channel multiplier, in (0, 64] */
    double dropout;                /* image classifiers: dropout before the last linear layer, in [0, 1) */

    /* [optim] */
    char optimizer[CONFIG_STR];    /* "sgd", "adam", "adamw" */
    double lr;                     /* >= 0 */
    double beta1, beta2;           /* in [0, 1) */
    double eps;                    /* > 0 */
    double weight_decay;           /* >= 0 */
    double momentum;               /* in [0, 1) */
    int nesterov;                  /* bool */
    char decay[CONFIG_STR];        /* "all" or "matrices": which parameters weight decay applies to */
    double clip;                   /* global gradient-norm clip; 0 disables */

    /* [schedule] */
    char schedule[CONFIG_STR];     /* "constant", "warmup", "multistep", "cosine", "warmup_cosine" */
    long warmup;                   /* warm-up steps, >= 0 */
    long milestones[CONFIG_MAX_MILESTONES]; /* multistep: steps where lr is multiplied by gamma */
    int n_milestones;
    double gamma;                  /* multistep factor, > 0 */
    double min_factor;             /* cosine: final lr as a fraction of lr, in [0, 1] */

    /* [train] */
    long steps;                    /* optimiser steps, >= 1 */
    long batch_size;               /* >= 1; a value >= the training set size means full batch */
    int accumulate;                /* micro-batches per optimiser step, >= 1 */
    long eval_every;               /* steps between evaluations, >= 1 */
    long checkpoint_every;         /* steps between checkpoints, >= 1 */
    int keep_checkpoints;          /* checkpoints kept, >= 1 */
    long log_every;                /* steps between progress lines when stderr is not a terminal, >= 1 */

    /* [trace] */
    long trace_every;              /* steps between SVD snapshots; 0 disables tracing */
    int trace_vectors;             /* top singular vectors stored per matrix, >= 0 */
    char trace_layers[CONFIG_STR]; /* comma-separated name globs of traced matrices, default "*" */
    double trace_prune;            /* low-rank evaluation fraction in [0, 1); 0 disables */
} Config;

/* Fill cfg with every key's default. */
void config_defaults(Config *cfg);

/* Parse an INI file into cfg (which should hold defaults first). On error
 * return -1, leave cfg unchanged and write one line into err naming the path
 * and, where the error has them, the line and key. */
int config_load(Config *cfg, const char *path, char *err, size_t errlen);

/* Apply one "section.key=value" override. On error return -1 with a message
 * naming the override and the problem; 0 on success. */
int config_override(Config *cfg, const char *assignment, char *err, size_t errlen);

/* Cross-key checks (n_heads divides d_model, milestones increasing, ...).
 * Return -1 with a message on the first violation, 0 when valid. */
int config_validate(const Config *cfg, char *err, size_t errlen);

/* Write every key with its resolved value as an INI file (atomically: a
 * temporary file renamed into place). Return -1 with a message on failure. */
int config_write(const Config *cfg, const char *path, char *err, size_t errlen);

#endif
