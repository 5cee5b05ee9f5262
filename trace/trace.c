/* The tracing hook; see trace.h. */
#include "trace.h"

#include <cblas.h>
#include <cjson/cJSON.h>
#include <errno.h>
#include <fnmatch.h>
#include <lapacke.h>
#include <math.h>
#include <omp.h>
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
    float *s, *u_full, *vt_full;  /* latest SVD: s [r], U [m, r], Vᵀ [r, n] */
    float *saved;                 /* original weights while projected, else NULL */
} TracedMatrix;

typedef struct {
    TracedMatrix *from, *to;
    int from_transposed, to_transposed, head, heads, k;
    NpyAppender *file;
} TracedPair;

struct Tracer {
    char dir[1024];
    TracedMatrix *mats;
    int count;
    TracedPair *pairs;
    int n_pairs;
    NpyAppender *steps;
    long last_step;
    int have_svd;                 /* the full SVDs belong to the current weights */
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

/* Below this many entries sgesdd runs single-threaded. With OpenBLAS 0.3.21
 * on 2 threads a 256 × 784 SVD took 19.9 ms against 10.7 ms on one, and
 * 512 × 512 took 55.6 ms against 37.2 ms. 1024 × 1024 was faster on two
 * (222.8 ms against 290.9 ms). Measured on a 2-core AMD EPYC.
 * NOTE: the bound is tuned on that one machine. */
#define SVD_SERIAL_MAX_ENTRIES (1L << 19)

/* Full thin SVD into s [r], u [m, r], vt [r, n] (u, vt NULL: values only). */
static int svd_full(const float *a, int m, int n, float *s, float *full_u, float *full_vt, char *err, size_t errlen) {
    int r = m < n ? m : n;
    int threads = omp_get_max_threads();
    if ((long)m * n < SVD_SERIAL_MAX_ENTRIES) omp_set_num_threads(1);
    int want_vectors = full_u != NULL;
    float *copy = sd_malloc((size_t)m * n * sizeof(float));
    char jobz = want_vectors ? 'S' : 'N';
    int info = 0;
    for (int attempt = 0; attempt < 2; attempt++) {
        memcpy(copy, a, (size_t)m * n * sizeof(float));
        if (attempt == 1) {
            /* Shift the diagonal by a tiny multiple of the largest entry. This
             * breaks the degeneracy that stalls the divide-and-conquer solver
             * and changes singular values by about that amount. */
            float amax = 0.0f;
            for (long i = 0; i < (long)m * n; i++) amax = fmaxf(amax, fabsf(a[i]));
            float shift = (amax > 0.0f ? amax : 1.0f) * 1e-6f;
            for (int i = 0; i < r; i++) copy[(long)i * n + i] += shift;
            sd_warn("SVD of a %d x %d matrix did not converge (info %d); retrying with a diagonal shift of %g",
                    m, n, info, (double)shift);
        }
        /* The row-major m × n matrix is the column-major n × m matrix Aᵀ = V S Uᵀ, so LAPACK's U
         * of it is our Vᵀ and its Vᵀ our U, and LAPACKE need not transpose in and out. */
        info = LAPACKE_sgesdd(LAPACK_COL_MAJOR, jobz, n, m, copy, n, s, full_vt, n, full_u, r);
        if (info == 0) break;
        if (info < 0) break; /* an invalid argument: retrying cannot help */
    }
    free(copy);
    omp_set_num_threads(threads);
    if (info != 0) {
        snprintf(err, errlen, "SVD of a %d x %d matrix failed (LAPACKE_sgesdd info %d)", m, n, info);
        return -1;
    }
    return 0;
}

/* Copy the top k columns of U [m, r] into u [m, k]. */
static void top_columns(const float *full_u, int m, int r, int k, float *u) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < k; j++) u[(long)i * k + j] = full_u[(long)i * r + j];
}

int svd_top(const float *a, int m, int n, int k, float *s, float *u, float *vt, char *err, size_t errlen) {
    int r = m < n ? m : n;
    float *full_u = k > 0 ? sd_malloc((size_t)m * r * sizeof(float)) : NULL;
    float *full_vt = k > 0 ? sd_malloc((size_t)r * n * sizeof(float)) : NULL;
    int rc = svd_full(a, m, n, s, full_u, full_vt, err, errlen);
    if (rc == 0 && k > 0) {
        top_columns(full_u, m, r, k, u);
        memcpy(vt, full_vt, (size_t)k * n * sizeof(float));
    }
    free(full_u);
    free(full_vt);
    return rc;
}

/* Write root (consumed) as t->dir/name through a temporary file and a rename. */
static int write_json(const Tracer *t, const char *name, cJSON *root, char *err, size_t errlen) {
    char *text = cJSON_Print(root);
    cJSON_Delete(root);
    char path[1100], tmp[1200];
    snprintf(path, sizeof path, "%s/%s", t->dir, name);
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
    return write_json(t, "layers.json", root, err, errlen);
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
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        if (p->t.ndim < 2 || !matches_any(p->name, globs)) continue;
        TracedMatrix *tm = &t->mats[t->count++];
        tm->param = p;
        tm->m = p->t.shape[0];
        tm->n = (int)(p->t.size / tm->m);
        tm->r = tm->m < tm->n ? tm->m : tm->n;
        tm->k = vectors < tm->r ? vectors : tm->r;
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
        tm->s = sd_malloc((size_t)tm->r * sizeof(float));
        tm->u_full = sd_malloc((size_t)tm->m * tm->r * sizeof(float));
        tm->vt_full = sd_malloc((size_t)tm->r * tm->n * sizeof(float));
    }
    t->steps = open_file(t, "steps", ".npy", NPY_I64, 0, NULL, resume, keep_rows, err, errlen);
    if (!t->steps) {
        tracer_close(t);
        return NULL;
    }
    if (write_layers_json(t, err, errlen) != 0) {
        tracer_close(t);
        return NULL;
    }
    return t;
}

/* Output-space vector i of a pair's `from` (length m of its cut) or
 * input-space vector i of its `to`, into v. */
static void space_vector(const float *u, const float *vt, int m, int n, int r, int use_vt, int i, float *v) {
    if (use_vt)
        memcpy(v, vt + (long)i * n, (size_t)n * sizeof(float));
    else
        for (int row = 0; row < m; row++) v[row] = u[(long)row * r + i];
}

/* SVD of rows [head·m/heads, (head+1)·m/heads) of a traced matrix. */
static int head_svd(const TracedMatrix *tm, int head, int heads, float **s, float **u, float **vt, int *m, int *r,
                    char *err, size_t errlen) {
    *m = tm->m / heads;
    *r = *m < tm->n ? *m : tm->n;
    *s = sd_malloc((size_t)*r * sizeof(float));
    *u = sd_malloc((size_t)*m * *r * sizeof(float));
    *vt = sd_malloc((size_t)*r * tm->n * sizeof(float));
    return svd_full(tm->param->t.data + (long)head * *m * tm->n, *m, tm->n, *s, *u, *vt, err, errlen);
}

static int append_alignment(TracedPair *p, char *err, size_t errlen) {
    const TracedMatrix *a = p->from, *b = p->to;
    float *sa = NULL, *ua = a->u_full, *vta = a->vt_full, *sb = NULL, *ub = b->u_full, *vtb = b->vt_full;
    int ma = a->m, ra = a->r, mb = b->m, rb = b->r;
    int rc = 0;
    if (p->head >= 0) {
        rc = head_svd(a, p->head, p->heads, &sa, &ua, &vta, &ma, &ra, err, errlen);
        if (rc == 0) rc = head_svd(b, p->head, p->heads, &sb, &ub, &vtb, &mb, &rb, err, errlen);
    }
    if (rc == 0) {
        int dim = p->from_transposed ? a->n : ma;
        float *x = sd_malloc((size_t)dim * sizeof(float)), *y = sd_malloc((size_t)dim * sizeof(float));
        float *diag = sd_malloc((size_t)p->k * sizeof(float));
        for (int i = 0; i < p->k; i++) {
            space_vector(ua, vta, ma, a->n, ra, p->from_transposed, i, x);
            space_vector(ub, vtb, mb, b->n, rb, !p->to_transposed, i, y);
            double dot = 0.0;
            for (int j = 0; j < dim; j++) dot += (double)x[j] * (double)y[j];
            diag[i] = (float)fabs(dot);
        }
        rc = npy_append(p->file, diag, err, errlen);
        free(x);
        free(y);
        free(diag);
    }
    if (p->head >= 0) {
        free(sa);
        free(sb);
        if (ua != a->u_full) free(ua);
        if (vta != a->vt_full) free(vta);
        if (ub != b->u_full) free(ub);
        if (vtb != b->vt_full) free(vtb);
    }
    return rc;
}

/* True when svd_full runs the matrix's SVD on one thread. */
static int svd_serial(const TracedMatrix *tm) { return (long)tm->m * tm->n < SVD_SERIAL_MAX_ENTRIES; }

static int svd_traced(TracedMatrix *tm, char *err, size_t errlen) {
    return svd_full(tm->param->t.data, tm->m, tm->n, tm->s, tm->u_full, tm->vt_full, err, errlen);
}

/* Compute the SVD of every traced matrix into its s, u_full and vt_full.
 * Matrices below SVD_SERIAL_MAX_ENTRIES are spread over the threads, one
 * serial SVD each, so their results do not depend on the thread count.
 * Larger ones follow one at a time, each using every thread. */
static int svd_all(Tracer *t, char *err, size_t errlen) {
    int *failed = sd_calloc((size_t)t->count, sizeof(int));
    char (*messages)[256] = sd_calloc((size_t)t->count, sizeof *messages);
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < t->count; i++)
        if (svd_serial(&t->mats[i])) failed[i] = svd_traced(&t->mats[i], messages[i], sizeof messages[i]) != 0;
    for (int i = 0; i < t->count; i++)
        if (!svd_serial(&t->mats[i])) failed[i] = svd_traced(&t->mats[i], messages[i], sizeof messages[i]) != 0;
    int rc = 0;
    for (int i = 0; i < t->count && rc == 0; i++)
        if (failed[i]) {
            snprintf(err, errlen, "%s", messages[i]);
            rc = -1;
        }
    free(failed);
    free(messages);
    return rc;
}

int tracer_snapshot(Tracer *t, long step, char *err, size_t errlen) {
    CHECK(!t->count || !t->mats[0].saved, "snapshot taken while weights are projected");
    if (svd_all(t, err, errlen) != 0) return -1;
    for (int i = 0; i < t->count; i++) {
        TracedMatrix *tm = &t->mats[i];
        if (npy_append(tm->sv, tm->s, err, errlen) != 0) return -1;
        if (tm->k > 0) {
            float *u = sd_malloc((size_t)tm->m * tm->k * sizeof(float));
            top_columns(tm->u_full, tm->m, tm->r, tm->k, u);
            int rc = npy_append(tm->u, u, err, errlen);
            free(u);
            if (rc != 0 || npy_append(tm->vt, tm->vt_full, err, errlen) != 0) return -1;
        }
    }
    for (int i = 0; i < t->n_pairs; i++)
        if (append_alignment(&t->pairs[i], err, errlen) != 0) return -1;
    int64_t s = step;
    if (npy_append(t->steps, &s, err, errlen) != 0) return -1;
    t->last_step = step;
    t->have_svd = 1;
    return 0;
}

static TracedMatrix *find_matrix(Tracer *t, const char *name) {
    for (int i = 0; i < t->count; i++)
        if (strcmp(t->mats[i].param->name, name) == 0) return &t->mats[i];
    return NULL;
}

int tracer_set_pairs(Tracer *t, const LayerPair *pairs, int n_pairs, int resume, long keep_step, char *err,
                     size_t errlen) {
    (void)keep_step;
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/align", t->dir);
    if (mkdir(dir, 0777) != 0 && errno != EEXIST) {
        snprintf(err, errlen, "cannot create '%s': %s", dir, strerror(errno));
        return -1;
    }
    long keep_rows = npy_rows(t->steps);
    t->pairs = sd_calloc((size_t)(n_pairs ? n_pairs : 1), sizeof *t->pairs);
    cJSON *root = cJSON_CreateArray();
    for (int i = 0; i < n_pairs; i++) {
        const LayerPair *lp = &pairs[i];
        TracedMatrix *a = find_matrix(t, lp->from), *b = find_matrix(t, lp->to);
        if (!a || !b) continue;
        TracedPair *p = &t->pairs[t->n_pairs];
        p->from = a;
        p->to = b;
        p->from_transposed = lp->from_transposed;
        p->to_transposed = lp->to_transposed;
        p->head = lp->head;
        p->heads = lp->heads;
        int ma = lp->head >= 0 ? a->m / lp->heads : a->m, mb = lp->head >= 0 ? b->m / lp->heads : b->m;
        int dim_a = lp->from_transposed ? a->n : ma, dim_b = lp->to_transposed ? mb : b->n;
        if (dim_a != dim_b) {
            snprintf(err, errlen, "layer pair %s -> %s: output dimension %d does not match input dimension %d", lp->from,
                     lp->to, dim_a, dim_b);
            cJSON_Delete(root);
            return -1;
        }
        int ra = ma < a->n ? ma : a->n, rb = mb < b->n ? mb : b->n;
        p->k = ra < rb ? ra : rb;
        if (p->k > 100) p->k = 100;
        char file[64], path[1200];
        snprintf(file, sizeof file, "align/%04d.npy", t->n_pairs);
        snprintf(path, sizeof path, "%s/%s", t->dir, file);
        long tail[1] = {p->k};
        p->file = resume ? npy_reopen(path, NPY_F32, 1, tail, keep_rows, err, errlen)
                         : npy_create(path, NPY_F32, 1, tail, err, errlen);
        if (!p->file) {
            cJSON_Delete(root);
            return -1;
        }
        t->n_pairs++;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "from", lp->from);
        cJSON_AddStringToObject(o, "to", lp->to);
        cJSON_AddNumberToObject(o, "head", lp->head);
        cJSON_AddNumberToObject(o, "k", p->k);
        cJSON_AddStringToObject(o, "file", file);
        cJSON_AddItemToArray(root, o);
    }
    return write_json(t, "pairs.json", root, err, errlen);
}

void tracer_project(Tracer *t, double frac, int keep_top) {
    CHECK(t->have_svd, "low-rank projection needs a snapshot of the current weights");
    for (int i = 0; i < t->count; i++) {
        TracedMatrix *tm = &t->mats[i];
        if (tm->param->role == ROLE_OUTPUT) continue;
        int cut = (int)lround(frac * tm->r);
        int lo = keep_top ? 0 : cut, hi = keep_top ? cut : tm->r;
        if (!tm->saved) {
            tm->saved = sd_malloc((size_t)tm->m * tm->n * sizeof(float));
            memcpy(tm->saved, tm->param->t.data, (size_t)tm->m * tm->n * sizeof(float));
        }
        float *w = tm->param->t.data;
        memset(w, 0, (size_t)tm->m * tm->n * sizeof(float));
        if (hi <= lo) continue;
        /* W = U[:, lo:hi] diag(s[lo:hi]) Vᵀ[lo:hi, :]: scale U's columns, then one GEMM. */
        float *us = sd_malloc((size_t)tm->m * (hi - lo) * sizeof(float));
        for (int row = 0; row < tm->m; row++)
            for (int j = lo; j < hi; j++) us[(long)row * (hi - lo) + (j - lo)] = tm->u_full[(long)row * tm->r + j] * tm->s[j];
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, tm->m, tm->n, hi - lo, 1.0f, us, hi - lo,
                    tm->vt_full + (long)lo * tm->n, tm->n, 0.0f, w, tm->n);
        free(us);
    }
}

void tracer_restore(Tracer *t) {
    for (int i = 0; i < t->count; i++) {
        TracedMatrix *tm = &t->mats[i];
        if (!tm->saved) continue;
        memcpy(tm->param->t.data, tm->saved, (size_t)tm->m * tm->n * sizeof(float));
        free(tm->saved);
        tm->saved = NULL;
    }
}

long tracer_last_step(const Tracer *t) { return t->last_step; }

int tracer_count(const Tracer *t) { return t->count; }

void tracer_close(Tracer *t) {
    if (!t) return;
    tracer_restore(t);
    for (int i = 0; i < t->count; i++) {
        npy_close(t->mats[i].sv);
        npy_close(t->mats[i].u);
        npy_close(t->mats[i].vt);
        free(t->mats[i].s);
        free(t->mats[i].u_full);
        free(t->mats[i].vt_full);
    }
    for (int i = 0; i < t->n_pairs; i++) npy_close(t->pairs[i].file);
    free(t->pairs);
    npy_close(t->steps);
    free(t->mats);
    free(t);
}
