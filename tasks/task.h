/* A task owns a data set and a model and turns a list of example indices
 * into a loss. The trainer uses only this interface and the parameter store,
 * so new data sets and model families plug in without touching it. */
#ifndef SD_TASK_H
#define SD_TASK_H

#include "config.h"
#include "graph.h"

typedef enum { SPLIT_TRAIN, SPLIT_VAL } Split;

typedef struct Task Task;
struct Task {
    const char *name;
    long n_train, n_val;
    long eval_batch;    /* examples per forward pass when evaluating a whole split */
    /* Forward examples idx[0..n) of split; return the mean loss (one element)
     * and add the number of correctly classified examples to *correct. */
    Tensor *(*forward)(Task *t, Graph *g, Split split, const long *idx, long n, long *correct);
    void (*free)(Task *t);
    /* Consecutive layer pairs of the model, for alignment. */
    LayerPair pairs[LAYER_PAIRS_MAX];
    int n_pairs;
    void *impl;
};

/* Build the task named by cfg->task, registering and initialising the
 * model's parameters in ps from the seed. On invalid settings return NULL
 * with a message in err. */
Task *task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen);
void task_free(Task *t);

/* The tasks task_create dispatches to, with its contract. */
Task *modular_task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen);
Task *images_task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen);

#endif
