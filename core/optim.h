/* Optimisers, learning-rate schedules and gradient clipping with PyTorch
 * 1.13 semantics (torch.optim.SGD, Adam, AdamW; clip_grad_norm_), computed in
 * float32 in the same order, so one step agrees with PyTorch to rounding. */
#ifndef SD_OPTIM_H
#define SD_OPTIM_H

#include "tensor.h"

typedef enum { OPTIM_SGD, OPTIM_ADAM, OPTIM_ADAMW } OptimKind;

typedef struct {
    OptimKind kind;
    double beta1, beta2, eps;     /* Adam, AdamW */
    double weight_decay;          /* SGD, Adam: added to the gradient; AdamW: decoupled */
    double momentum;              /* SGD; 0 disables the buffer */
    int nesterov;                 /* SGD */
    int decay_matrices_only;      /* 1: weight decay skips parameters with fewer than 2 dimensions */
    long step;                    /* optimiser steps taken; saved in checkpoints */
} Optimizer;

/* Apply one update with learning rate lr to every parameter of ps from its
 * gradient, allocating optimiser state on first use, and increment o->step. */
void optim_step(Optimizer *o, ParamStore *ps, double lr);

/* Number of state buffers the optimiser keeps per parameter (0, 1 or 2) and
 * their checkpoint suffixes ("momentum_buffer"; "exp_avg", "exp_avg_sq"). */
int optim_state_count(const Optimizer *o);
const char *optim_state_name(const Optimizer *o, int i);

typedef enum { SCHED_CONSTANT, SCHED_WARMUP, SCHED_MULTISTEP, SCHED_COSINE, SCHED_WARMUP_COSINE } ScheduleKind;

typedef struct {
    ScheduleKind kind;
    long total_steps;
    long warmup;
    const long *milestones;       /* increasing; n_milestones entries */
    int n_milestones;
    double gamma;
    double min_factor;            /* cosine floor as a fraction of the base rate */
} Schedule;

/* Learning-rate factor for the update that follows `step` completed updates,
 * as a PyTorch LambdaLR stepped once per update would give:
 *   warmup:         min(1, step / warmup)
 *   multistep:      gamma^(number of milestones <= step)
 *   cosine:         m + (1 − m) (1 + cos(π step / total)) / 2
 *   warmup_cosine:  warmup, then cosine over the remaining total − warmup steps. */
double schedule_factor(const Schedule *s, long step);

/* Scale all gradients by min(1, max_norm / (norm + 1e-6)) where norm is the
 * global L2 norm of every gradient, as torch.nn.utils.clip_grad_norm_ does.
 * Returns the norm before clipping. */
double clip_grad_norm(ParamStore *ps, double max_norm);

/* Global L2 norm of every gradient (summed in double, in parameter order). */
double grad_norm(const ParamStore *ps);

#endif
