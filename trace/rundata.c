/* Reading a run directory; see rundata.h. */
#include "rundata.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <ini.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"

#define PATH_LEN 4096

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* Format a path into out; a path of PATH_LEN bytes or more is an error
 * rather than silently cut short. */
static int format_path(char *out, char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static int format_path(char *out, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(out, PATH_LEN, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_LEN) {
        set_error(err, errlen, "path too long (%d bytes, at most %d): '%.80s...'", n, PATH_LEN - 1, out);
        return -1;
    }
    return 0;
}

static int file_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

static int dir_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0 && S_ISDIR(st.st_mode);
}

/* Read a whole file into a NUL-terminated buffer; return NULL with errno set on failure. */
static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    size_t cap = 1 << 16, len = 0;
    char *buf = sd_malloc(cap);
    size_t got;
    while ((got = fread(buf + len, 1, cap - len - 1, f)) > 0) {
        len += got;
        if (cap - len - 1 == 0) buf = sd_realloc(buf, cap *= 2);
    }
    int failed = ferror(f);
    fclose(f);
    if (failed) {
        free(buf);
        errno = EIO;
        return NULL;
    }
    buf[len] = '\0';
    return buf;
}

/* ---- metrics.csv ---------------------------------------------------------- */

int metrics_column(const MetricsTable *t, const char *name) {
    for (int c = 0; c < t->n_cols; c++)
        if (strcmp(t->names[c], name) == 0) return c;
    return -1;
}

double metrics_value(const MetricsTable *t, long row, const char *name) {
    int c = metrics_column(t, name);
    return c < 0 ? (double)NAN : t->values[row * t->n_cols + c];
}

static void metrics_free(MetricsTable *t) {
    for (int c = 0; c < t->n_cols; c++) free(t->names[c]);
    free(t->names);
    free(t->values);
    memset(t, 0, sizeof *t);
}

/* Split line in place at commas into fields (at most max); return the count. */
static int split_fields(char *line, char **fields, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n < max) fields[n] = p;
        n++;
        char *comma = strchr(p, ',');
        if (!comma) break;
        *comma = '\0';
        p = comma + 1;
    }
    return n;
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    char *end = s + strlen(s);
    while (end > s && (end[-1] == ' ' || end[-1] == '\t' || end[-1] == '\r')) *--end = '\0';
    return s;
}

/* Cut the next line off *cursor in place: return it, or NULL at the end of
 * the text. *terminated is set when it ended with a newline. */
static char *next_line(char **cursor, int *terminated) {
    char *line = *cursor;
    if (*line == '\0') return NULL;
    char *newline = strchr(line, '\n');
    *terminated = newline != NULL;
    if (newline) {
        *newline = '\0';
        *cursor = newline + 1;
    } else {
        *cursor = line + strlen(line);
    }
    return line;
}

/* A last line without its newline is a row still being written and is skipped. */
static int metrics_load(const char *path, MetricsTable *t, char *err, size_t errlen) {
    memset(t, 0, sizeof *t);
    char *text = read_text(path);
    if (!text) {
        set_error(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    char *cursor = text;
    int terminated = 0;
    char *line = next_line(&cursor, &terminated);
    if (!line) {
        set_error(err, errlen, "'%s' is empty: the run has not written its metrics header yet", path);
        free(text);
        return -1;
    }
    enum { MAX_COLS = 256 };
    char *fields[MAX_COLS];
    int n = split_fields(line, fields, MAX_COLS);
    if (n > MAX_COLS) {
        set_error(err, errlen, "'%s' has %d columns; at most %d are supported", path, n, MAX_COLS);
        free(text);
        return -1;
    }
    t->n_cols = n;
    t->names = sd_calloc((size_t)n, sizeof(char *));
    for (int c = 0; c < n; c++) t->names[c] = sd_strdup(trim(fields[c]));
    if (metrics_column(t, "step") < 0) {
        set_error(err, errlen, "'%s' has no 'step' column in its header", path);
        metrics_free(t);
        free(text);
        return -1;
    }

    long cap = 256;
    t->values = sd_malloc((size_t)cap * n * sizeof(double));
    long line_no = 1;
    while ((line = next_line(&cursor, &terminated)) != NULL) {
        line_no++;
        if (!terminated) break;
        if (*trim(line) == '\0') continue;
        char *row_fields[MAX_COLS];
        int got = split_fields(line, row_fields, MAX_COLS);
        if (got > n) {
            set_error(err, errlen, "'%s' line %ld has %d fields but the header has %d", path, line_no, got, n);
            metrics_free(t);
            free(text);
            return -1;
        }
        if (t->n_rows == cap) t->values = sd_realloc(t->values, (size_t)(cap *= 2) * n * sizeof(double));
        double *row = t->values + t->n_rows * n;
        for (int c = 0; c < n; c++) {
            row[c] = NAN;
            if (c >= got) continue;
            char *field = trim(row_fields[c]);
            if (*field == '\0') continue;
            char *end;
            row[c] = strtod(field, &end);
            if (*end != '\0') {
                set_error(err, errlen, "'%s' line %ld, column '%s': invalid number '%s'", path, line_no,
                          t->names[c], field);
                metrics_free(t);
                free(text);
                return -1;
            }
        }
        t->n_rows++;
    }
    free(text);
    return 0;
}

/* ---- labels ---------------------------------------------------------------- */

/* Return the block number of a name containing "blocks.N.", or -1. */
static long block_number(const char *name) {
    const char *p = strstr(name, "blocks.");
    if (!p) return -1;
    char *end;
    long block = strtol(p + 7, &end, 10);
    return end > p + 7 && *end == '.' ? block : -1;
}

void run_short_label(const char *name, int single_block, char *label, size_t len) {
    char buf[512];
    snprintf(buf, sizeof buf, "%s", name);
    size_t n = strlen(buf);
    if (n > 7 && strcmp(buf + n - 7, ".weight") == 0) buf[n - 7] = '\0';

    char *p = strstr(buf, "blocks.");
    if (p && block_number(buf) >= 0) {
        char *rest = strchr(p + 7, '.') + 1;
        char head[512];
        snprintf(head, sizeof head, "%.*s", (int)(p - buf), buf);
        if (single_block)
            snprintf(label, len, "%s%s", head, rest);
        else
            snprintf(label, len, "%sb%ld.%s", head, block_number(buf), rest);
        return;
    }
    snprintf(label, len, "%s", buf);
}

/* ---- trace ----------------------------------------------------------------- */

typedef struct {
    long trace_every;   /* -1 when config.ini has no [trace] every key */
    double prune;       /* NaN when config.ini has no [trace] prune key */
} ConfigKeys;

static int config_key(void *user, const char *section, const char *name, const char *value) {
    ConfigKeys *keys = user;
    if (strcmp(section, "trace") == 0 && strcmp(name, "every") == 0) keys->trace_every = strtol(value, NULL, 10);
    if (strcmp(section, "trace") == 0 && strcmp(name, "prune") == 0) keys->prune = strtod(value, NULL);
    return 1;
}

/* Read a .npy file that must exist, have ndim dimensions and the given tail. */
static int read_trace_array(const char *path, NpyDtype dtype, int ndim, const long *tail, NpyArray *out, char *err,
                            size_t errlen) {
    if (!file_exists(path)) {
        set_error(err, errlen, "missing trace file '%s'", path);
        return -1;
    }
    if (npy_read(path, out, err, errlen) != 0) return -1;
    int ok = out->dtype == dtype && out->ndim == ndim;
    for (int i = 1; ok && i < ndim; i++) ok = out->shape[i] == tail[i - 1];
    if (!ok) {
        char shape[128] = "(";
        for (int i = 0; i < out->ndim; i++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), i ? ", %ld" : "%ld", out->shape[i]);
        snprintf(shape + strlen(shape), sizeof shape - strlen(shape), ")");
        set_error(err, errlen, "'%s' has %s shape %s, which does not match trace/layers.json", path,
                  out->dtype == NPY_F32 ? "float32" : "int64", shape);
        npy_free(out);
        return -1;
    }
    return 0;
}

/* Lower *rows to the row count of a, warning when a file falls short. */
static void clip_rows(const char *path, const NpyArray *a, long *rows) {
    if (a->shape[0] < *rows) {
        sd_warn("'%s' has %ld snapshots but steps.npy has %ld; reporting the first %ld", path, a->shape[0], *rows,
                a->shape[0]);
        *rows = a->shape[0];
    }
}

static int json_int(const cJSON *o, const char *key, int *out) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(item)) return -1;
    *out = item->valueint;
    return 0;
}

static int load_matrices(RunData *run, const char *trace_dir, long *rows, char *err, size_t errlen) {
    char path[PATH_LEN];
    if (format_path(path, err, errlen, "%s/layers.json", trace_dir) != 0) return -1;
    char *text = read_text(path);
    if (!text) {
        set_error(err, errlen, "missing trace file '%s': %s", path, strerror(errno));
        return -1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(root)) {
        set_error(err, errlen, "'%s' is not a JSON array of matrices", path);
        cJSON_Delete(root);
        return -1;
    }
    int count = cJSON_GetArraySize(root);
    run->matrices = sd_calloc((size_t)(count ? count : 1), sizeof(RunMatrix));

    long first_block = -2;
    int single_block = 1;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const cJSON *name = cJSON_GetObjectItemCaseSensitive(item, "name");
        const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "matrix");
        const cJSON *role = cJSON_GetObjectItemCaseSensitive(item, "role");
        RunMatrix *mat = &run->matrices[run->n_matrices];
        if (!cJSON_IsString(name) || !cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 2 ||
            json_int(item, "rank", &mat->r) != 0 || json_int(item, "vectors", &mat->k) != 0) {
            set_error(err, errlen, "'%s': entry %d needs \"name\", \"matrix\" [m, n], \"rank\" and \"vectors\"", path,
                      run->n_matrices);
            cJSON_Delete(root);
            return -1;
        }
        mat->name = sd_strdup(name->valuestring);
        run->n_matrices++;
        mat->m = cJSON_GetArrayItem(shape, 0)->valueint;
        mat->n = cJSON_GetArrayItem(shape, 1)->valueint;
        snprintf(mat->role, sizeof mat->role, "%s", cJSON_IsString(role) ? role->valuestring : "weight");
        if (mat->r != (mat->m < mat->n ? mat->m : mat->n) || mat->k < 0 || mat->k > mat->r) {
            set_error(err, errlen, "'%s': matrix '%s' has rank %d and %d vectors, inconsistent with shape %d x %d",
                      path, mat->name, mat->r, mat->k, mat->m, mat->n);
            cJSON_Delete(root);
            return -1;
        }
        long block = block_number(mat->name);
        if (block >= 0) {
            if (first_block == -2) first_block = block;
            if (block != first_block) single_block = 0;
        }
    }
    cJSON_Delete(root);

    for (int i = 0; i < run->n_matrices; i++) {
        RunMatrix *mat = &run->matrices[i];
        char label[128];
        run_short_label(mat->name, single_block, label, sizeof label);
        mat->label = sd_strdup(label);

        long sv_tail[1] = {mat->r};
        if (format_path(path, err, errlen, "%s/%s.sv.npy", trace_dir, mat->name) != 0) return -1;
        if (read_trace_array(path, NPY_F32, 2, sv_tail, &mat->sv_file, err, errlen) != 0) return -1;
        clip_rows(path, &mat->sv_file, rows);
        mat->sv = mat->sv_file.data;
        if (mat->k == 0) continue;

        long u_tail[2] = {mat->m, mat->k}, vt_tail[2] = {mat->k, mat->n};
        if (format_path(path, err, errlen, "%s/%s.u.npy", trace_dir, mat->name) != 0) return -1;
        if (read_trace_array(path, NPY_F32, 3, u_tail, &mat->u_file, err, errlen) != 0) return -1;
        clip_rows(path, &mat->u_file, rows);
        mat->u = mat->u_file.data;
        if (format_path(path, err, errlen, "%s/%s.vt.npy", trace_dir, mat->name) != 0) return -1;
        if (read_trace_array(path, NPY_F32, 3, vt_tail, &mat->vt_file, err, errlen) != 0) return -1;
        clip_rows(path, &mat->vt_file, rows);
        mat->vt = mat->vt_file.data;
    }
    return 0;
}

static const char *matrix_label(const RunData *run, const char *name) {
    for (int i = 0; i < run->n_matrices; i++)
        if (strcmp(run->matrices[i].name, name) == 0) return run->matrices[i].label;
    return NULL;
}

/* pairs.json is optional: runs traced before alignment existed have none. */
static int load_pairs(RunData *run, const char *trace_dir, long *rows, char *err, size_t errlen) {
    char path[PATH_LEN];
    if (format_path(path, err, errlen, "%s/pairs.json", trace_dir) != 0) return -1;
    if (!file_exists(path)) return 0;
    char *text = read_text(path);
    if (!text) {
        set_error(err, errlen, "cannot read '%s': %s", path, strerror(errno));
        return -1;
    }
    cJSON *root = cJSON_Parse(text);
    free(text);
    if (!cJSON_IsArray(root)) {
        set_error(err, errlen, "'%s' is not a JSON array of layer pairs", path);
        cJSON_Delete(root);
        return -1;
    }
    run->pairs = sd_calloc((size_t)(cJSON_GetArraySize(root) + 1), sizeof(RunPair));
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        const cJSON *from = cJSON_GetObjectItemCaseSensitive(item, "from");
        const cJSON *to = cJSON_GetObjectItemCaseSensitive(item, "to");
        const cJSON *file = cJSON_GetObjectItemCaseSensitive(item, "file");
        RunPair *pair = &run->pairs[run->n_pairs];
        if (!cJSON_IsString(from) || !cJSON_IsString(to) || !cJSON_IsString(file) ||
            json_int(item, "head", &pair->head) != 0 || json_int(item, "k", &pair->k) != 0 || pair->k < 1) {
            set_error(err, errlen, "'%s': entry %d needs \"from\", \"to\", \"head\", \"k\" >= 1 and \"file\"", path,
                      run->n_pairs);
            cJSON_Delete(root);
            return -1;
        }
        pair->from = sd_strdup(from->valuestring);
        pair->to = sd_strdup(to->valuestring);
        run->n_pairs++;

        const char *from_label = matrix_label(run, pair->from), *to_label = matrix_label(run, pair->to);
        char label[256];
        int used = snprintf(label, sizeof label, "%s → %s", from_label ? from_label : pair->from,
                            to_label ? to_label : pair->to);
        if (pair->head >= 0) snprintf(label + used, sizeof label - (size_t)used, ", head %d", pair->head);
        pair->label = sd_strdup(label);

        char file_path[PATH_LEN];
        if (format_path(file_path, err, errlen, "%s/%s", trace_dir, file->valuestring) != 0) {
            cJSON_Delete(root);
            return -1;
        }
        long tail[1] = {pair->k};
        if (read_trace_array(file_path, NPY_F32, 2, tail, &pair->file, err, errlen) != 0) {
            cJSON_Delete(root);
            return -1;
        }
        clip_rows(file_path, &pair->file, rows);
        pair->diag = pair->file.data;
    }
    cJSON_Delete(root);
    return 0;
}

static int load_trace(RunData *run, char *err, size_t errlen) {
    char trace_dir[PATH_LEN], path[PATH_LEN];
    if (format_path(trace_dir, err, errlen, "%s/trace", run->dir) != 0) return -1;
    if (format_path(path, err, errlen, "%s/steps.npy", trace_dir) != 0) return -1;
    NpyArray steps;
    if (read_trace_array(path, NPY_I64, 1, NULL, &steps, err, errlen) != 0) return -1;
    long rows = steps.shape[0];
    if (rows == 0) {
        set_error(err, errlen, "'%s' has no complete snapshot yet; rerun the report after the first trace step", path);
        npy_free(&steps);
        return -1;
    }

    int rc = load_matrices(run, trace_dir, &rows, err, errlen);
    if (rc == 0) rc = load_pairs(run, trace_dir, &rows, err, errlen);
    if (rc == 0 && rows == 0) {
        set_error(err, errlen, "'%s' has no complete snapshot in every trace file", trace_dir);
        rc = -1;
    }
    if (rc == 0) {
        run->n_snapshots = rows;
        run->steps = sd_malloc((size_t)rows * sizeof(long));
        const int64_t *data = steps.data;
        for (long t = 0; t < rows; t++) run->steps[t] = (long)data[t];
    }
    npy_free(&steps);
    return rc;
}

/* ---- run directory --------------------------------------------------------- */

int run_load(const char *dir, RunData *run, char *err, size_t errlen) {
    memset(run, 0, sizeof *run);
    char path[PATH_LEN];
    if (!dir_exists(dir)) {
        set_error(err, errlen, "run directory '%s' not found", dir);
        return -1;
    }
    run->dir = sd_strdup(dir);
    size_t len = strlen(run->dir);
    while (len > 1 && run->dir[len - 1] == '/') run->dir[--len] = '\0';
    /* Name the run after its directory, also when given as "." or "..". */
    char *resolved = realpath(run->dir, NULL);
    const char *base = resolved ? resolved : run->dir;
    const char *slash = strrchr(base, '/');
    run->name = sd_strdup(slash && slash[1] ? slash + 1 : base);
    free(resolved);

    if (format_path(path, err, errlen, "%s/config.ini", run->dir) != 0) {
        run_free(run);
        return -1;
    }
    if (!file_exists(path)) {
        set_error(err, errlen, "'%s' is not a run directory: '%s' not found", run->dir, path);
        run_free(run);
        return -1;
    }
    ConfigKeys keys = {.trace_every = -1, .prune = NAN};
    int line = ini_parse(path, config_key, &keys);
    if (line != 0) {
        set_error(err, errlen, "'%s': cannot parse line %d", path, line);
        run_free(run);
        return -1;
    }

    if (format_path(path, err, errlen, "%s/metrics.csv", run->dir) != 0) {
        run_free(run);
        return -1;
    }
    if (!file_exists(path)) {
        set_error(err, errlen, "missing '%s': the run has not logged any metrics", path);
        run_free(run);
        return -1;
    }
    if (metrics_load(path, &run->metrics, err, errlen) != 0) {
        run_free(run);
        return -1;
    }
    if (run->metrics.n_rows == 0) {
        set_error(err, errlen, "'%s' has no rows: the run has not logged an evaluation yet", path);
        run_free(run);
        return -1;
    }

    run->prune = keys.prune;
    if (format_path(path, err, errlen, "%s/trace", run->dir) != 0) {
        run_free(run);
        return -1;
    }
    run->has_trace = keys.trace_every != 0 && (keys.trace_every > 0 || dir_exists(path));
    if (run->has_trace && load_trace(run, err, errlen) != 0) {
        run_free(run);
        return -1;
    }
    return 0;
}

void run_free(RunData *run) {
    free(run->dir);
    free(run->name);
    metrics_free(&run->metrics);
    free(run->steps);
    for (int i = 0; i < run->n_matrices; i++) {
        RunMatrix *mat = &run->matrices[i];
        free(mat->name);
        free(mat->label);
        npy_free(&mat->sv_file);
        npy_free(&mat->u_file);
        npy_free(&mat->vt_file);
    }
    free(run->matrices);
    for (int i = 0; i < run->n_pairs; i++) {
        free(run->pairs[i].from);
        free(run->pairs[i].to);
        free(run->pairs[i].label);
        npy_free(&run->pairs[i].file);
    }
    free(run->pairs);
    memset(run, 0, sizeof *run);
}
