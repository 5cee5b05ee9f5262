/* Checkpoints; see checkpoint.h. */
#include "checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "safetensors.h"

#define CHECKPOINT_FORMAT "specdyn-checkpoint"
#define CHECKPOINT_VERSION "1"

/* Steps of every step_*.safetensors in dir, ascending; returns the count. */
static int list_checkpoints(const char *dir, long **steps_out) {
    DIR *d = opendir(dir);
    int n = 0, cap = 16;
    long *steps = sd_malloc((size_t)cap * sizeof *steps);
    if (d) {
        struct dirent *ent;
        while ((ent = readdir(d))) {
            long step;
            char tail[32];
            if (sscanf(ent->d_name, "step_%ld.safetensor%31s", &step, tail) == 2 && strcmp(tail, "s") == 0) {
                if (n == cap) steps = sd_realloc(steps, (size_t)(cap *= 2) * sizeof *steps);
                steps[n++] = step;
            }
        }
        closedir(d);
    }
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && steps[j - 1] > steps[j]; j--) {
            long t = steps[j];
            steps[j] = steps[j - 1];
            steps[j - 1] = t;
        }
    *steps_out = steps;
    return n;
}

static void checkpoint_path(char *buf, size_t len, const char *run_dir, long step) {
    snprintf(buf, len, "%s/checkpoints/step_%08ld.safetensors", run_dir, step);
}

int checkpoint_save(const char *run_dir, long step, double wall_seconds, const ParamStore *ps,
                    const Optimizer *o, int keep, char *err, size_t errlen) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create '%s': %s", dir, strerror(errno));
        return -1;
    }
    int states = optim_state_count(o);
    int max_entries = ps->count * (1 + states);
    StTensorRef *refs = sd_calloc((size_t)max_entries, sizeof *refs);
    char (*names)[PARAM_NAME_MAX + 32] = sd_calloc((size_t)max_entries, sizeof *names);
    int n = 0;
    for (int i = 0; i < ps->count; i++) {
        const Param *p = &ps->params[i];
        for (int s = -1; s < states; s++) {
            const float *data = s < 0 ? p->t.data : p->state[s];
            if (!data) continue; /* state not yet allocated: before the first step */
            if (s < 0)
                snprintf(names[n], sizeof names[n], "%s", p->name);
            else
                snprintf(names[n], sizeof names[n], "%s.%s", p->name, optim_state_name(o, s));
            refs[n].name = names[n];
            refs[n].dtype = ST_F32;
            refs[n].ndim = p->t.ndim;
            for (int d = 0; d < p->t.ndim; d++) refs[n].shape[d] = p->t.shape[d];
            refs[n].data = data;
            n++;
        }
    }
    char step_s[32], ostep_s[32], wall_s[64];
    snprintf(step_s, sizeof step_s, "%ld", step);
    snprintf(ostep_s, sizeof ostep_s, "%ld", o->step);
    snprintf(wall_s, sizeof wall_s, "%.17g", wall_seconds);
    const char *keys[] = {"format", "version", "step", "optimizer_step", "wall_seconds"};
    const char *values[] = {CHECKPOINT_FORMAT, CHECKPOINT_VERSION, step_s, ostep_s, wall_s};
    char path[1200];
    checkpoint_path(path, sizeof path, run_dir, step);
    int rc = st_write(path, refs, n, keys, values, 5, err, errlen);
    free(refs);
    free(names);
    if (rc != 0) return -1;

    long *steps;
    int count = list_checkpoints(dir, &steps);
    for (int i = 0; i < count - keep; i++) {
        checkpoint_path(path, sizeof path, run_dir, steps[i]);
        if (remove(path) != 0) sd_warn("cannot remove old checkpoint '%s': %s", path, strerror(errno));
    }
    free(steps);
    return 0;
}

void checkpoint_remove_after(const char *run_dir, long step) {
    char dir[1100], path[1400];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    /* Temporary files of writes a kill interrupted. */
    DIR *d = opendir(dir);
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        if (!strstr(ent->d_name, ".safetensors.tmp.")) continue;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        if (remove(path) != 0) sd_warn("cannot remove '%s': %s", path, strerror(errno));
    }
    if (d) closedir(d);
    long *steps;
    int count = list_checkpoints(dir, &steps);
    for (int i = 0; i < count; i++) {
        if (steps[i] <= step) continue;
        checkpoint_path(path, sizeof path, run_dir, steps[i]);
        if (remove(path) != 0) sd_warn("cannot remove checkpoint '%s': %s", path, strerror(errno));
    }
    free(steps);
}

/* Copy tensor name from f into dst (size elements, shape of like); -1 with a message on mismatch. */
static int copy_tensor(const StFile *f, const char *path, const char *name, const Tensor *like, float *dst,
                       char *err, size_t errlen) {
    const StTensorRef *t = st_find(f, name);
    if (!t) {
        snprintf(err, errlen, "checkpoint '%s' has no tensor '%s'", path, name);
        return -1;
    }
    long size = 1;
    for (int d = 0; d < t->ndim; d++) size *= t->shape[d];
    if (t->dtype != ST_F32 || size != like->size || t->ndim != like->ndim) {
        snprintf(err, errlen, "checkpoint '%s': tensor '%s' has another dtype or shape than the model's", path, name);
        return -1;
    }
    memcpy(dst, t->data, (size_t)size * sizeof(float));
    return 0;
}

static StFile *open_checkpoint(const char *path, long *step, char *err, size_t errlen) {
    StFile *f = st_read(path, err, errlen);
    if (!f) return NULL;
    const char *format = st_meta(f, "format"), *version = st_meta(f, "version"), *s = st_meta(f, "step");
    if (!format || strcmp(format, CHECKPOINT_FORMAT) != 0 || !version || !s) {
        snprintf(err, errlen, "'%s' is not a specdyn checkpoint (metadata 'format' is not '%s')", path, CHECKPOINT_FORMAT);
        st_free(f);
        return NULL;
    }
    if (strcmp(version, CHECKPOINT_VERSION) != 0) {
        snprintf(err, errlen, "'%s' has checkpoint version %s; this build reads version %s", path, version,
                 CHECKPOINT_VERSION);
        st_free(f);
        return NULL;
    }
    *step = strtol(s, NULL, 10);
    return f;
}

long checkpoint_load_params(const char *path, ParamStore *ps, char *err, size_t errlen) {
    long step;
    StFile *f = open_checkpoint(path, &step, err, errlen);
    if (!f) return -1;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        if (copy_tensor(f, path, p->name, &p->t, p->t.data, err, errlen) != 0) {
            st_free(f);
            return -1;
        }
    }
    st_free(f);
    return step;
}

static int load_one(const char *path, ParamStore *ps, Optimizer *o, long *step, double *wall, char *err,
                    size_t errlen) {
    StFile *f = open_checkpoint(path, step, err, errlen);
    if (!f) return -1;
    const char *ostep = st_meta(f, "optimizer_step"), *w = st_meta(f, "wall_seconds");
    o->step = ostep ? strtol(ostep, NULL, 10) : 0;
    *wall = w ? strtod(w, NULL) : 0.0;
    int states = o->step > 0 ? optim_state_count(o) : 0;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        /* Drop state a failed load of a newer checkpoint may have left. */
        for (int s = states; s < 2; s++) {
            free(p->state[s]);
            p->state[s] = NULL;
        }
        if (copy_tensor(f, path, p->name, &p->t, p->t.data, err, errlen) != 0) goto fail;
        for (int s = 0; s < states; s++) {
            char name[PARAM_NAME_MAX + 32];
            snprintf(name, sizeof name, "%s.%s", p->name, optim_state_name(o, s));
            if (!p->state[s]) p->state[s] = sd_calloc((size_t)p->t.size, sizeof(float));
            if (copy_tensor(f, path, name, &p->t, p->state[s], err, errlen) != 0) goto fail;
        }
    }
    st_free(f);
    return 0;
fail:
    st_free(f);
    return -1;
}

long checkpoint_load_latest(const char *run_dir, ParamStore *ps, Optimizer *o, double *wall_seconds,
                            char *err, size_t errlen) {
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/checkpoints", run_dir);
    long *steps;
    int count = list_checkpoints(dir, &steps);
    long result = -1;
    for (int i = count - 1; i >= 0; i--) {
        char path[1200];
        checkpoint_path(path, sizeof path, run_dir, steps[i]);
        long step;
        if (load_one(path, ps, o, &step, wall_seconds, err, errlen) == 0) {
            result = step;
            break;
        }
        sd_warn("skipping unreadable checkpoint: %s", err);
        result = -2;
    }
    free(steps);
    return result;
}
