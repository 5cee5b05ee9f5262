/* The report of ./report: figures (PNG), index.html and summary.json for one
 * run, or comparison figures for several runs.
 *
 * Files written for one run into its output directory:
 *   loss.png, error.png             train and validation curves, with the
 *                                   low-rank "top" and "bottom" evaluations
 *                                   when metrics.csv has them
 *   singular_values_NAME.png        the top 8 singular values of each matrix
 *   effective_rank.png              effective rank of every matrix over steps
 *   effective_rank_heatmap.png      the same as a matrices × steps heat map
 *   sva_NAME.png                    SVA diagonal against the final snapshot
 *   alignment_NNNN.png              alignment diagonal of each layer pair,
 *   alignment_scores.png            and the pair scores over steps
 *   spectral.csv                    every spectral measure per matrix and snapshot
 *   index.html, summary.json
 * The trace figures are left out for a run traced with trace.every = 0. */
#ifndef SD_REPORT_H
#define SD_REPORT_H

#include <stddef.h>

#include "rundata.h"

/* Write the report of run into out_dir (created if missing). Return 0, or -1
 * with a message naming the file in err. */
int report_run(const RunData *run, const char *out_dir, char *err, size_t errlen);

/* Write comparison figures of n_runs runs into out_dir: validation accuracy
 * overlays and per-matrix effective-rank overlays, with index.html and a
 * summary.json holding each run's summary. Return 0, or -1 with a message. */
int report_compare(const RunData *runs, int n_runs, const char *out_dir, char *err, size_t errlen);

/* Write the report of the sweep in sweep_dir (a directory with the sweep.json
 * that ./sweep writes) into out_dir: runs that differ only by seed are
 * grouped, and the figures show means with ±1 sample standard deviation:
 *   sweep_final_accuracy.png          final validation and train accuracy
 *                                     against the x key (weight decay when it
 *                                     is a grid key, else the first grid key)
 *   sweep_final_effective_rank.png    final effective rank of every traced
 *                                     matrix against the x key (one file per
 *                                     combination of the other grid keys)
 *   sweep_effective_rank_NAME.png     effective rank over steps per grid point
 *   sweep_effective_rank.csv, summary.json (per-group means and std), index.html
 * Runs without data yet are left out. Return 0, or -1 with a message. */
int report_sweep_dir(const char *sweep_dir, const char *out_dir, char *err, size_t errlen);

/* Return the index of the first metrics row at or after which column reaches
 * threshold (value >= threshold), or -1 when it never does. */
long report_first_reaching(const MetricsTable *t, const char *column, double threshold);

/* Return the index of the first snapshot taken at or after step, or the last
 * snapshot when all are earlier. run must have a snapshot. */
long report_snapshot_at(const RunData *run, long step);

#endif
