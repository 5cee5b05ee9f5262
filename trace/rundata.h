/* A run directory read into memory for analysis: metrics.csv, and the trace
 * written by the tracer (see trace.h for the file layout).
 *
 * Dimension letters: T complete snapshots (the length of steps.npy), m × n a
 * traced matrix, r = min(m, n), k its stored singular vectors. A trace cut off
 * mid-append has matrix files with more than T rows; only the first T are
 * used. A file with fewer than T rows lowers T for the whole run, with a
 * warning naming the file. */
#ifndef SD_RUNDATA_H
#define SD_RUNDATA_H

#include <stddef.h>

#include "npy.h"

/* metrics.csv by column name; an empty field is NaN. */
typedef struct {
    int n_cols;
    char **names;       /* [n_cols] header names */
    long n_rows;
    double *values;     /* [n_rows, n_cols] */
} MetricsTable;

typedef struct {
    char *name;         /* parameter name, e.g. blocks.0.attn.wq.weight */
    char *label;        /* shortened name for legends, e.g. attn.wq */
    char role[32];      /* embedding, attn_q, ..., output, weight */
    int m, n, r, k;
    const float *sv;    /* [T, r] singular values, descending */
    const float *u;     /* [T, m, k] left singular vectors as columns; NULL when k = 0 */
    const float *vt;    /* [T, k, n] right singular vectors as rows; NULL when k = 0 */
    NpyArray sv_file, u_file, vt_file;  /* owners of the arrays above */
} RunMatrix;

/* One consecutive-layer pair from trace/pairs.json. */
typedef struct {
    char *from, *to;
    char *label;        /* "from → to" with short names, plus " head h" */
    int head;           /* attention head, or -1 for the whole matrices */
    int k;
    const float *diag;  /* [T, k] per snapshot, |⟨u_i(from), v_i(to)⟩| */
    NpyArray file;
} RunPair;

typedef struct {
    char *dir;          /* as given, without trailing slashes */
    char *name;         /* base name of dir, used as the run's label */
    MetricsTable metrics;
    double prune;       /* trace.prune, the low-rank evaluation's top fraction; NaN when unknown */
    int has_trace;      /* 0 when tracing was disabled (trace.every = 0) */
    long n_snapshots;   /* T */
    long *steps;        /* [T] */
    int n_matrices;
    RunMatrix *matrices;
    int n_pairs;
    RunPair *pairs;
} RunData;

/* Read the run directory dir into run. Return 0, or -1 with one line in err
 * naming the path when dir is not a run directory (no config.ini), a trace
 * file is missing or malformed, metrics.csv has no rows, or the trace has no
 * complete snapshot. On failure run holds nothing to free. */
int run_load(const char *dir, RunData *run, char *err, size_t errlen);

/* Free everything run_load() allocated; a zeroed RunData is allowed. */
void run_free(RunData *run);

/* Return the column index of name in the metrics table, or -1. */
int metrics_column(const MetricsTable *t, const char *name);

/* Return the value at (row, column name), or NaN when the column is absent. */
double metrics_value(const MetricsTable *t, long row, const char *name);

/* Write into label (size len) a short legend label for a matrix name: drop a
 * trailing ".weight", and drop "blocks.N." when single_block, else shorten
 * it to "bN.". */
void run_short_label(const char *name, int single_block, char *label, size_t len);

#endif
