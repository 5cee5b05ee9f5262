/* Checkpoints: RUN/checkpoints/step_NNNNNNNN.safetensors with every
 * parameter under its own name, optimiser state as NAME.exp_avg,
 * NAME.exp_avg_sq or NAME.momentum_buffer, and metadata "format" =
 * "specdyn-checkpoint", "version" = "1", "step", "optimizer_step" and
 * "wall_seconds". */
#ifndef SD_CHECKPOINT_H
#define SD_CHECKPOINT_H

#include <stddef.h>

#include "optim.h"
#include "tensor.h"

/* Write the checkpoint for step atomically, then delete all but the newest
 * keep checkpoints. Return 0, or -1 with a message in err. */
int checkpoint_save(const char *run_dir, long step, double wall_seconds, const ParamStore *ps,
                    const Optimizer *o, int keep, char *err, size_t errlen);

/* Load the newest checkpoint that reads back completely into ps and o.
 * Return its step, -1 when there is no checkpoint, or -2 with a message in
 * err when checkpoints exist but none matches the model. */
long checkpoint_load_latest(const char *run_dir, ParamStore *ps, Optimizer *o, double *wall_seconds,
                            char *err, size_t errlen);

/* Delete the checkpoints of steps after step (left by a run resumed from an
 * older checkpoint because a newer one was unreadable), so that pruning to
 * the newest keep_checkpoints never removes the run's good ones, and the
 * temporary files of checkpoint writes that a kill interrupted. */
void checkpoint_remove_after(const char *run_dir, long step);

/* Load one checkpoint file's parameters into ps (optimiser state ignored).
 * Return its step, or -1 with a message in err. */
long checkpoint_load_params(const char *path, ParamStore *ps, char *err, size_t errlen);

#endif
