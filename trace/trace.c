/* The tracing hook; see trace.h. */
#include "trace.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fnmatch.h>
#include <lapacke.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "error.h"
#include "npy.h"

typedef struct {
    Param *param;
    int m, n, r, k;
    NpyAppender *sv, *u, *vt;
} TracedMatrix;

struct Tracer {
    char dir[1024];
    TracedMatrix *mats;
    int count;
    NpyAppender *steps;
    long last_step;
    float *work_s, *work_u, *work_vt; /* scratch sized for the largest matrix */
};

static int matches_any(const char *name, const char *globs) {
    char buf[CONFIG_STR];
    snprintf(buf, sizeof buf, "%s", globs);
    for (char *save = NULL, *pat = strtok_r(buf, ",", &save); pat; pat = strtok_r(NULL, ",", &save)) {
        while (*pat == ' ') pat++;
        char *end = pat + strlen(pat);
        while (end > pat && end[-1] == ' ') *--end = '\0';
        if (fnmatch(pat, name, 0) == 0) return 1;
    }
    return 0;
}

int svd_top(const float *a, int m, int n, int k, float *s, float *u, float *vt, char *err, size_t errlen) {
    int r = m < n ? m : n;
    float *copy = sd_malloc((size_t)m * n * sizeof(float));
    float *full_u = k > 0 ? sd_malloc((size_t)m * r * sizeof(float)) : NULL;
    float *full_vt = k > 0 ? sd_malloc((size_t)r * n * sizeof(float)) : NULL;
    char jobz = k > 0 ? 'S' : 'N';
    int info = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        memcpy(copy, a, (size_t)m * n * sizeof(float));
        if (attempt == 1) {
            /* Shift the diagonal by a tiny multiple of the largest entry; this
             * breaks the degeneracy that stalls the divide-and-conquer solver
             * and changes singular values by about that amount. */
            float amax = 0.0f;
            for (long i = 0; i < (long)m * n; i++) amax = fmaxf(amax, fabsf(a[i]));
            float shift = (amax > 0.0f ? amax : 1.0f) * 1e-6f;
            for (int i = 0; i < r; i++) copy[(long)i * n + i] += shift;
            sd_warn("SVD of a %d x %d matrix did not converge (info %d); retrying with a diagonal shift of %g",
                    m, n, info, (double)shift);
        }
        info = LAPACKE_sgesdd(LAPACK_ROW_MAJOR, jobz, m, n, copy, n, s, full_u, r, full_vt, n);
        if (info == 0) break;
        if (info < 0) break; /* an invalid argument: retrying cannot help */
    }
    if (info == 0 && k > 0) {
        for (int i = 0; i < m; i++)
            for (int j = 0; j < k; j++) u[(long)i * k + j] = full_u[(long)i * r + j];
        memcpy(vt, full_vt, (size_t)k * n * sizeof(float));
    }
    free(copy);
    free(full_u);
    free(full_vt);
    if (info != 0) {
        snprintf(err, errlen, "SVD of a %d x %d matrix failed (LAPACKE_sgesdd info %d)", m, n, info);
        return -1;
    }
    return 0;
}

static int write_layers_json(const Tracer *t, char *err, size_t errlen) {
    cJSON *root = cJSON_CreateArray();
    for (int i = 0; i < t->count; i++) {
        const TracedMatrix *tm = &t->mats[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", tm->param->name);
        cJSON *shape = cJSON_AddArrayToObject(o, "shape");
        for (int d = 0; d < tm->param->t.ndim; d++) cJSON_AddItemToArray(shape, cJSON_CreateNumber(tm->param->t.shape[d]));
        cJSON *matrix = cJSON_AddArrayToObject(o, "matrix");
        cJSON_AddItemToArray(matrix, cJSON_CreateNumber(tm->m));
        cJSON_AddItemToArray(matrix, cJSON_CreateNumber(tm->n));
        cJSON_AddStringToObject(o, "role", param_role_names[tm->param->role]);
        cJSON_AddNumberToObject(o, "rank", tm->r);
        cJSON_AddNumberToObject(o, "vectors", tm->k);
        cJSON_AddItemToArray(root, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char path[1100], tmp[1200];
    snprintf(path, sizeof path, "%s/layers.json", t->dir);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    int ok = f && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        snprintf(err, errlen, "cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static NpyAppender *open_file(const Tracer *t, const char *name, const char *suffix, NpyDtype dtype, int n_tail,
                              const long *tail, int resume, long keep_rows, char *err, size_t errlen) {
    char path[1200];
    snprintf(path, sizeof path, "%s/%s%s", t->dir, name, suffix);
    if (resume) return npy_reopen(path, dtype, n_tail, tail, keep_rows, err, errlen);
    return npy_create(path, dtype, n_tail, tail, err, errlen);
}

/* Count the snapshots in steps.npy taken at or before keep_step. */
static long rows_to_keep(const char *dir, long keep_step, long *last_step, char *err, size_t errlen) {
    char path[1200];
    snprintf(path, sizeof path, "%s/steps.npy", dir);
    NpyArray arr;
    if (npy_read(path, &arr, err, errlen) != 0) return -1;
    if (arr.dtype != NPY_I64 || arr.ndim != 1) {
        snprintf(err, errlen, "'%s' is not a 1-D int64 array", path);
        npy_free(&arr);
        return -1;
    }
    const int64_t *steps = arr.data;
    long keep = 0;
    *last_step = -1;
    while (keep < arr.shape[0] && steps[keep] <= keep_step) *last_step = steps[keep++];
    npy_free(&arr);
    return keep;
}

Tracer *tracer_open(const char *run_dir, ParamStore *ps, const char *globs, int vectors, int resume,
                    long keep_step, char *err, size_t errlen) {
    Tracer *t = sd_calloc(1, sizeof *t);
    t->last_step = -1;
    snprintf(t->dir, sizeof t->dir, "%s/trace", run_dir);
    if (mkdir(t->dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create '%s': %s", t->dir, strerror(errno));
        free(t);
        return NULL;
    }
    long keep_rows = -1;
    if (resume) {
        keep_rows = rows_to_keep(t->dir, keep_step, &t->last_step, err, errlen);
        if (keep_rows < 0) {
            free(t);
            return NULL;
        }
    }
    t->mats = sd_calloc((size_t)ps->count, sizeof *t->mats);
    long max_mn = 0, max_r = 0;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        if (p->t.ndim < 2 || !matches_any(p->name, globs)) continue;
        TracedMatrix *tm = &t->mats[t->count++];
        tm->param = p;
        tm->m = p->t.shape[0];
        tm->n = (int)(p->t.size / tm->m);
        tm->r = tm->m < tm->n ? tm->m : tm->n;
        tm->k = vectors < tm->r ? vectors : tm->r;
        if ((long)tm->m * tm->n > max_mn) max_mn = (long)tm->m * tm->n;
        if (tm->r > max_r) max_r = tm->r;
        long sv_tail[1] = {tm->r}, u_tail[2] = {tm->m, tm->k}, vt_tail[2] = {tm->k, tm->n};
        tm->sv = open_file(t, p->name, ".sv.npy", NPY_F32, 1, sv_tail, resume, keep_rows, err, errlen);
        if (tm->sv && tm->k > 0) {
            tm->u = open_file(t, p->name, ".u.npy", NPY_F32, 2, u_tail, resume, keep_rows, err, errlen);
            if (tm->u) tm->vt = open_file(t, p->name, ".vt.npy", NPY_F32, 2, vt_tail, resume, keep_rows, err, errlen);
        }
        if (!tm->sv || (tm->k > 0 && (!tm->u || !tm->vt))) {
            tracer_close(t);
            return NULL;
        }
    }
    t->steps = open_file(t, "steps", ".npy", NPY_I64, 0, NULL, resume, keep_rows, err, errlen);
    if (!t->steps) {
        tracer_close(t);
        return NULL;
    }
    t->work_s = sd_malloc((size_t)(max_r ? max_r : 1) * sizeof(float));
    t->work_u = sd_malloc((size_t)(max_mn ? max_mn : 1) * sizeof(float));
    t->work_vt = sd_malloc((size_t)(max_mn ? max_mn : 1) * sizeof(float));
    if (write_layers_json(t, err, errlen) != 0) {
        tracer_close(t);
        return NULL;
    }
    return t;
}

int tracer_snapshot(Tracer *t, long step, char *err, size_t errlen) {
    for (int i = 0; i < t->count; i++) {
        TracedMatrix *tm = &t->mats[i];
        if (svd_top(tm->param->t.data, tm->m, tm->n, tm->k, t->work_s, t->work_u, t->work_vt, err, errlen) != 0)
            return -1;
        if (npy_append(tm->sv, t->work_s, err, errlen) != 0) return -1;
        if (tm->k > 0) {
            if (npy_append(tm->u, t->work_u, err, errlen) != 0) return -1;
            if (npy_append(tm->vt, t->work_vt, err, errlen) != 0) return -1;
        }
    }
    int64_t s = step;
    if (npy_append(t->steps, &s, err, errlen) != 0) return -1;
    t->last_step = step;
    return 0;
}

long tracer_last_step(const Tracer *t) { return t->last_step; }

int tracer_count(const Tracer *t) { return t->count; }

void tracer_close(Tracer *t) {
    if (!t) return;
    for (int i = 0; i < t->count; i++) {
        npy_close(t->mats[i].sv);
        npy_close(t->mats[i].u);
        npy_close(t->mats[i].vt);
    }
    npy_close(t->steps);
    free(t->mats);
    free(t->work_s);
    free(t->work_u);
    free(t->work_vt);
    free(t);
}
