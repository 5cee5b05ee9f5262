/* Task dispatch; see task.h. */
#include "task.h"

#include <stdio.h>
#include <string.h>

Task *task_create(const Config *cfg, ParamStore *ps, char *err, size_t errlen) {
    if (strcmp(cfg->task, "modular") == 0) return modular_task_create(cfg, ps, err, errlen);
    if (strcmp(cfg->task, "images") == 0) return images_task_create(cfg, ps, err, errlen);
    snprintf(err, errlen, "[task] name = %s: unknown task", cfg->task);
    return NULL;
}

void task_free(Task *t) {
    if (t) t->free(t);
}
