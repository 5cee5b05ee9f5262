/* The tracing hook: at chosen steps, the SVD of every traced matrix of the
 * parameter store, appended to .npy files in RUN/trace/:
 *   steps.npy        int64 [T]            the step of each snapshot
 *   NAME.sv.npy      float32 [T, r]       singular values, descending, r = min(m, n)
 *   NAME.u.npy       float32 [T, m, k]    top-k left singular vectors (columns)
 *   NAME.vt.npy      float32 [T, k, n]    top-k right singular vectors (rows)
 *   layers.json      name, shape, matrix shape, role, r and k of each matrix
 *   pairs.json       consecutive layer pairs: from, to, head, k and file
 *   align/NNNN.npy   float32 [T, k]    per pair, |⟨out_i(from), in_i(to)⟩| for
 *                                      i < k: the top-k diagonal of the
 *                                      alignment matrix |V_toᵀ U_from|
 * A parameter with two or more dimensions is traced as a matrix
 * out × (product of the other dimensions). Each snapshot appends to every
 * matrix file first and to steps.npy last, so steps.npy's length is the
 * number of complete snapshots. */
#ifndef SD_TRACE_H
#define SD_TRACE_H

#include <stddef.h>

#include "tensor.h"

typedef struct Tracer Tracer;

/* Start a trace in run_dir/trace for the parameters of ps with two or more
 * dimensions whose names match one of the comma-separated globs. With
 * resume, reopen the existing files and drop snapshots taken after
 * keep_step; otherwise create them. k = vectors (clipped to r). Return NULL
 * with a message in err on failure. */
Tracer *tracer_open(const char *run_dir, ParamStore *ps, const char *globs, int vectors, int resume,
                    long keep_step, char *err, size_t errlen);

/* Record alignment for these consecutive pairs (call once, right after
 * tracer_open and before the first snapshot). Pairs naming an untraced matrix
 * are skipped. k = min(100, ranks). Return 0, or -1 with a message in err. */
int tracer_set_pairs(Tracer *t, const LayerPair *pairs, int n_pairs, int resume, long keep_step, char *err,
                     size_t errlen);

/* Replace every traced matrix except the output layer by its rank-cut
 * reconstruction from the latest snapshot: the top c = round(frac · r)
 * singular directions (keep_top) or the other r − c (bottom). The original
 * weights are saved and come back with tracer_restore(). Call only right
 * after tracer_snapshot() on unchanged weights. */
void tracer_project(Tracer *t, double frac, int keep_top);
void tracer_restore(Tracer *t);

/* Take the SVD of every traced matrix and append one snapshot for step.
 * Return 0, or -1 with a message in err. */
int tracer_snapshot(Tracer *t, long step, char *err, size_t errlen);

/* Step of the last complete snapshot, or -1 when there is none. */
long tracer_last_step(const Tracer *t);

/* Number of traced matrices. */
int tracer_count(const Tracer *t);

void tracer_close(Tracer *t);

/* Singular values (descending) of the row-major matrix a [m, n], and the
 * top-k left (u [m, k]) and right (vt [k, n]) singular vectors when k > 0
 * (u and vt may be NULL when k = 0). a is not modified. If LAPACK's sgesdd
 * does not converge, the SVD is retried once on a with a tiny diagonal shift
 * and a warning is printed. Return 0, or -1 with a message in err. */
int svd_top(const float *a, int m, int n, int k, float *s, float *u, float *vt, char *err, size_t errlen);

#endif
