/* Report figures and summaries; see report.h. */
#include "report.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "error.h"
#include "plot.h"
#include "report_internal.h"
#include "spectral.h"

#define PATH_LEN 4096
#define FIG_WIDTH 1000
#define FIG_HEIGHT 620
#define TOP_SINGULAR_VALUES 8
/* Accuracies are logged with 6 decimals, so "reached 1.0" allows for rounding. */
#define ACCURACY_SLACK 1e-9

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void report_add_figure(Report *rep, const char *file, const char *fmt, ...) {
    if (rep->n_figures == rep->cap_figures) {
        rep->cap_figures = rep->cap_figures ? 2 * rep->cap_figures : 32;
        rep->figures = sd_realloc(rep->figures, (size_t)rep->cap_figures * sizeof(Figure));
    }
    Figure *f = &rep->figures[rep->n_figures++];
    snprintf(f->file, sizeof f->file, "%s", file);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(f->caption, sizeof f->caption, fmt, ap);
    va_end(ap);
}

void report_file_part(const char *name, char *out, size_t len) {
    size_t i = 0;
    for (; name[i] && i + 1 < len; i++) {
        char c = name[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' || c == '_' ||
                 c == '-';
        out[i] = ok ? c : '_';
    }
    out[i] = '\0';
}

/* Draw a figure into rep->dir/file; on failure keep the first error. */
static int draw_lines(Report *rep, const char *file, const PlotAxes *axes, const PlotSeries *series, int n) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/%s", rep->dir, file);
    return plot_lines(path, FIG_WIDTH, FIG_HEIGHT, axes, series, n, rep->err, rep->errlen);
}

static int draw_heatmap(Report *rep, const char *file, int height, const PlotHeatmap *h) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/%s", rep->dir, file);
    return plot_heatmap(path, FIG_WIDTH, height, h, rep->err, rep->errlen);
}

/* ---- shared analysis -------------------------------------------------------- */

long report_first_reaching(const MetricsTable *t, const char *column, double threshold) {
    int c = metrics_column(t, column);
    if (c < 0) return -1;
    for (long row = 0; row < t->n_rows; row++)
        if (t->values[row * t->n_cols + c] >= threshold - ACCURACY_SLACK) return row;
    return -1;
}

long report_snapshot_at(const RunData *run, long step) {
    CHECK(run->n_snapshots > 0, "run '%s' has no snapshot", run->dir);
    for (long t = 0; t < run->n_snapshots; t++)
        if (run->steps[t] >= step) return t;
    return run->n_snapshots - 1;
}

/* Metrics column as doubles [n_rows]; NULL when the column is absent or has
 * no finite value. The caller frees it. */
static double *metrics_series(const MetricsTable *t, const char *column, double (*transform)(double)) {
    int c = metrics_column(t, column);
    if (c < 0) return NULL;
    double *out = sd_malloc((size_t)t->n_rows * sizeof(double));
    int any = 0;
    for (long row = 0; row < t->n_rows; row++) {
        double v = t->values[row * t->n_cols + c];
        out[row] = transform && !isnan(v) ? transform(v) : v;
        any |= isfinite(out[row]);
    }
    if (!any) {
        free(out);
        return NULL;
    }
    return out;
}

static double error_from_accuracy(double accuracy) { return 1.0 - accuracy; }

/* Spectral measures of every matrix at every snapshot: [n_matrices][T]. */
typedef struct {
    int n_matrices;
    long n_snapshots;
    SpectralMetrics **values;
} SpectralTable;

static SpectralTable spectral_table(const RunData *run) {
    SpectralTable table = {run->n_matrices, run->n_snapshots, NULL};
    table.values = sd_calloc((size_t)(run->n_matrices ? run->n_matrices : 1), sizeof(SpectralMetrics *));
    for (int i = 0; i < run->n_matrices; i++) {
        const RunMatrix *mat = &run->matrices[i];
        table.values[i] = sd_malloc((size_t)run->n_snapshots * sizeof(SpectralMetrics));
        for (long t = 0; t < run->n_snapshots; t++)
            table.values[i][t] = spectral_metrics(mat->sv + t * mat->r, mat->r);
    }
    return table;
}

static void spectral_table_free(SpectralTable *table) {
    for (int i = 0; i < table->n_matrices; i++) free(table->values[i]);
    free(table->values);
}

static double *snapshot_steps(const RunData *run) {
    double *x = sd_malloc((size_t)run->n_snapshots * sizeof(double));
    for (long t = 0; t < run->n_snapshots; t++) x[t] = (double)run->steps[t];
    return x;
}

static double *metrics_steps(const MetricsTable *t) {
    double *x = sd_malloc((size_t)t->n_rows * sizeof(double));
    for (long row = 0; row < t->n_rows; row++) x[row] = metrics_value(t, row, "step");
    return x;
}

/* ---- metrics figures --------------------------------------------------------- */

/* The loss or error figure: train and validation, with the low-rank variants. */
static int curves_figure(Report *rep, const RunData *run, int error) {
    const MetricsTable *t = &run->metrics;
    double *x = metrics_steps(t);

    char variant_top[64] = "top", variant_bottom[64] = "bottom";
    if (isfinite(run->prune)) {
        snprintf(variant_top, sizeof variant_top, "top %g%%", 100.0 * run->prune);
        snprintf(variant_bottom, sizeof variant_bottom, "bottom %g%%", 100.0 * (1.0 - run->prune));
    }
    const char *splits[2] = {"train", "val"};
    const char *split_names[2] = {"train", "validation"};
    const char *suffixes[3] = {"", "_top", "_bottom"};
    const char *suffix_names[3] = {NULL, variant_top, variant_bottom};
    const int styles[3] = {PLOT_SOLID, PLOT_LONG_DASHED, PLOT_SHORT_DASHED};

    PlotSeries series[6];
    char labels[6][96];
    double *data[6] = {0};
    int n = 0, variants = 0;
    for (int v = 0; v < 3; v++) {
        for (int s = 0; s < 2; s++) {
            char column[64];
            snprintf(column, sizeof column, "%s_%s%s", splits[s], error ? "acc" : "loss", suffixes[v]);
            double *y = metrics_series(t, column, error ? error_from_accuracy : NULL);
            if (!y) continue;
            if (suffix_names[v])
                snprintf(labels[n], sizeof labels[n], "%s, %s", split_names[s], suffix_names[v]);
            else
                snprintf(labels[n], sizeof labels[n], "%s", split_names[s]);
            data[n] = y;
            series[n] = (PlotSeries){labels[n], x, y, t->n_rows, plot_category_color(s, 2), styles[v]};
            n++;
            variants |= 1 << v;
        }
    }

    int rc = 0;
    if (n > 0) {
        char title[256];
        snprintf(title, sizeof title, "%s: %s", run->name, error ? "error" : "loss");
        PlotAxes axes = {title, "step", error ? "error (1 - accuracy)" : "cross-entropy loss (nats)",
                         !error, 0.0, error ? 1.0 : 0.0, 0};
        const char *file = error ? "error.png" : "loss.png";
        rc = draw_lines(rep, file, &axes, series, n);
        const char *lowrank = variants & 6 ? "; long dashes: every matrix but the output layer cut to its top "
                                             "singular directions, short dashes: to the bottom ones"
                                           : "";
        if (rc == 0)
            report_add_figure(rep, file, "%s over training steps, train and validation%s.",
                       error ? "Error (1 - accuracy)" : "Loss (log scale)", lowrank);
    }
    for (int i = 0; i < n; i++) free(data[i]);
    free(x);
    return rc;
}

/* ---- spectral figures -------------------------------------------------------- */

static int singular_value_figures(Report *rep, const RunData *run, const double *x) {
    for (int i = 0; i < run->n_matrices; i++) {
        const RunMatrix *mat = &run->matrices[i];
        int top = mat->r < TOP_SINGULAR_VALUES ? mat->r : TOP_SINGULAR_VALUES;
        double *y = sd_malloc((size_t)top * run->n_snapshots * sizeof(double));
        PlotSeries series[TOP_SINGULAR_VALUES];
        char labels[TOP_SINGULAR_VALUES][32];
        for (int j = 0; j < top; j++) {
            for (long t = 0; t < run->n_snapshots; t++) y[j * run->n_snapshots + t] = mat->sv[t * mat->r + j];
            snprintf(labels[j], sizeof labels[j], "#gs#d%d#u", j + 1);
            PlotColor color = plot_colormap_color(COLORMAP_VIRIDIS, top > 1 ? 0.9 * j / (top - 1) : 0.0);
            series[j] = (PlotSeries){labels[j], x, y + j * run->n_snapshots, run->n_snapshots, color, PLOT_SOLID};
        }
        char title[512], file[400], part[300];
        snprintf(title, sizeof title, "%s: top singular values of %s (%d × %d)", run->name, mat->label, mat->m,
                 mat->n);
        report_file_part(mat->name, part, sizeof part);
        snprintf(file, sizeof file, "singular_values_%s.png", part);
        PlotAxes axes = {title, "step", "singular value", 0, 0.0, 0.0, 0};
        int rc = draw_lines(rep, file, &axes, series, top);
        free(y);
        if (rc != 0) return rc;
        report_add_figure(rep, file, "The %d largest singular values of %s (%d × %d) over training steps.", top, mat->name,
                   mat->m, mat->n);
    }
    return 0;
}

static int effective_rank_figures(Report *rep, const RunData *run, const SpectralTable *table, const double *x) {
    long T = run->n_snapshots;
    int n = run->n_matrices;
    if (n == 0) return 0;
    double *values = sd_malloc((size_t)n * T * sizeof(double));
    PlotSeries *series = sd_calloc((size_t)n, sizeof(PlotSeries));
    const char **labels = sd_calloc((size_t)n, sizeof(char *));
    double top = 0.0;
    for (int i = 0; i < n; i++) {
        for (long t = 0; t < T; t++) {
            values[i * T + t] = table->values[i][t].effective_rank;
            if (isfinite(values[i * T + t])) top = fmax(top, values[i * T + t]);
        }
        labels[i] = run->matrices[i].label;
        series[i] = (PlotSeries){labels[i], x, values + i * T, T, plot_category_color(i, n), plot_category_style(i, n)};
    }
    char title[256];
    snprintf(title, sizeof title, "%s: effective rank", run->name);
    PlotAxes axes = {title, "step", "effective rank / r", 0, 0.0, fmin(1.0, 1.05 * top + 0.01), 0};
    int rc = draw_lines(rep, "effective_rank.png", &axes, series, n);
    if (rc == 0)
        report_add_figure(rep, "effective_rank.png",
                   "Effective rank (exp of the entropy of the normalised singular values, divided by r = min(m, n)) "
                   "of every matrix over training steps.");

    if (rc == 0) {
        PlotHeatmap h = {title, "step", NULL, "effective rank / r", x, (int)T, n, labels, values, 0.0, 1.0,
                         COLORMAP_VIRIDIS};
        int height = 200 + 34 * n;
        if (height < 420) height = 420;
        if (height > 1400) height = 1400;
        rc = draw_heatmap(rep, "effective_rank_heatmap.png", height, &h);
        if (rc == 0)
            report_add_figure(rep, "effective_rank_heatmap.png",
                       "Effective rank / r of every matrix (rows, in model order) over training steps; colour range "
                       "0 to 1.");
    }
    free(values);
    free(series);
    free(labels);
    return rc;
}

/* Height of an index × steps heat map with k rows. */
static int index_heatmap_height(int k) { return k <= 16 ? 460 : 560; }

static int sva_figures(Report *rep, const RunData *run, const double *x) {
    long T = run->n_snapshots, ref = T - 1;
    for (int i = 0; i < run->n_matrices; i++) {
        const RunMatrix *mat = &run->matrices[i];
        if (mat->k == 0) continue;
        int k = mat->k < SPECTRAL_MAX_VECTORS ? mat->k : SPECTRAL_MAX_VECTORS;
        long u_size = (long)mat->m * mat->k, vt_size = (long)mat->k * mat->n;
        double *values = sd_malloc((size_t)k * T * sizeof(double));
        float *diag = sd_malloc((size_t)k * sizeof(float));
        for (long t = 0; t < T; t++) {
            spectral_sva_diagonal(mat->u + t * u_size, mat->vt + t * vt_size, mat->u + ref * u_size,
                                  mat->vt + ref * vt_size, mat->m, mat->n, mat->k, k, diag);
            for (int j = 0; j < k; j++) values[(long)j * T + t] = diag[j];
        }
        char title[512], file[400], part[300];
        snprintf(title, sizeof title, "%s: SVA of %s with step %ld", run->name, mat->label, run->steps[ref]);
        report_file_part(mat->name, part, sizeof part);
        snprintf(file, sizeof file, "sva_%s.png", part);
        PlotHeatmap h = {title, "step", "singular vector index", "singular vector agreement", x,
                         (int)T, k, NULL, values, 0.0, 1.0, COLORMAP_MAGMA};
        int rc = draw_heatmap(rep, file, index_heatmap_height(k), &h);
        free(values);
        free(diag);
        if (rc != 0) return rc;
        report_add_figure(rep, file,
                   "Singular vector agreement of %s: diagonal of |U_tᵀ U_ref| ⊙ |V_tᵀ V_ref| for the top %d "
                   "singular vectors against the final snapshot (step %ld); 1 means the same direction.",
                   mat->name, k, run->steps[ref]);
    }
    return 0;
}

static int alignment_figures(Report *rep, const RunData *run, const double *x) {
    if (run->n_pairs == 0) return 0;
    long T = run->n_snapshots;
    double *scores = sd_malloc((size_t)run->n_pairs * T * sizeof(double));
    for (int p = 0; p < run->n_pairs; p++) {
        const RunPair *pair = &run->pairs[p];
        double *values = sd_malloc((size_t)pair->k * T * sizeof(double));
        for (long t = 0; t < T; t++) {
            for (int j = 0; j < pair->k; j++) values[(long)j * T + t] = pair->diag[t * pair->k + j];
            scores[p * T + t] = spectral_alignment_score(pair->diag + t * pair->k, pair->k);
        }
        char title[512], file[64];
        snprintf(title, sizeof title, "%s: alignment %s", run->name, pair->label);
        snprintf(file, sizeof file, "alignment_%04d.png", p);
        PlotHeatmap h = {title, "step", "singular vector index i", "|u#di#u(from) · v#di#u(to)|", x, (int)T,
                         pair->k, NULL, values, 0.0, 1.0, COLORMAP_INFERNO};
        int rc = draw_heatmap(rep, file, index_heatmap_height(pair->k), &h);
        free(values);
        if (rc != 0) {
            free(scores);
            return rc;
        }
        report_add_figure(rep, file,
                   "Alignment of consecutive layers %s → %s%s: |⟨u_i(%s), v_i(%s)⟩| for the top %d singular "
                   "directions.",
                   pair->from, pair->to, pair->head >= 0 ? " (one attention head)" : "", pair->from, pair->to,
                   pair->k);
    }

    PlotSeries *series = sd_calloc((size_t)run->n_pairs, sizeof(PlotSeries));
    for (int p = 0; p < run->n_pairs; p++)
        series[p] = (PlotSeries){run->pairs[p].label, x, scores + p * T, T, plot_category_color(p, run->n_pairs),
                                 plot_category_style(p, run->n_pairs)};
    char title[256];
    snprintf(title, sizeof title, "%s: alignment scores", run->name);
    PlotAxes axes = {title, "step", "mean top-k alignment", 0, 0.0, 1.0, 0};
    int rc = draw_lines(rep, "alignment_scores.png", &axes, series, run->n_pairs);
    if (rc == 0)
        report_add_figure(rep, "alignment_scores.png",
                   "Alignment score of each consecutive layer pair (mean of the top-k diagonal) over training steps.");
    free(series);
    free(scores);
    return rc;
}

/* ---- machine-readable outputs -------------------------------------------------- */

static int write_spectral_csv(const Report *rep, const RunData *run, const SpectralTable *table) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/spectral.csv", rep->dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        set_error(rep->err, rep->errlen, "cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    fprintf(f, "step,matrix,frobenius,spectral,nuclear,effective_rank,rank90,stable_rank\n");
    for (long t = 0; t < run->n_snapshots; t++)
        for (int i = 0; i < run->n_matrices; i++) {
            const SpectralMetrics *s = &table->values[i][t];
            fprintf(f, "%ld,%s,%.9g,%.9g,%.9g,%.9g,%.9g,%.9g\n", run->steps[t], run->matrices[i].name, s->frobenius,
                    s->spectral, s->nuclear, s->effective_rank, s->rank90, s->stable_rank);
        }
    if (fclose(f) != 0) {
        set_error(rep->err, rep->errlen, "writing '%s' failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static cJSON *json_number_or_null(double v) { return isfinite(v) ? cJSON_CreateNumber(v) : cJSON_CreateNull(); }

/* {"step": snapshot step, "value": effective rank} at the snapshot for a metrics row, or null. */
static cJSON *rank_at_row(const RunData *run, const SpectralTable *table, int matrix, long row) {
    if (row < 0) return cJSON_CreateNull();
    long t = report_snapshot_at(run, (long)metrics_value(&run->metrics, row, "step"));
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "snapshot_step", (double)run->steps[t]);
    cJSON_AddItemToObject(o, "value", json_number_or_null(table->values[matrix][t].effective_rank));
    return o;
}

/* The headline numbers of one run; the caller owns the returned object. */
static cJSON *run_summary(const RunData *run, const SpectralTable *table) {
    const MetricsTable *mt = &run->metrics;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "run", run->name);
    cJSON_AddStringToObject(root, "dir", run->dir);
    cJSON_AddNumberToObject(root, "last_metrics_step", metrics_value(mt, mt->n_rows - 1, "step"));
    cJSON_AddNumberToObject(root, "snapshots", (double)run->n_snapshots);
    if (run->n_snapshots > 0) cJSON_AddNumberToObject(root, "last_snapshot_step", (double)run->steps[run->n_snapshots - 1]);

    long train_row = report_first_reaching(mt, "train_acc", 1.0);
    long val_row = report_first_reaching(mt, "val_acc", 0.95);
    cJSON_AddItemToObject(root, "train_acc_1_step",
                          train_row < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(metrics_value(mt, train_row, "step")));
    cJSON_AddItemToObject(root, "val_acc_0.95_step",
                          val_row < 0 ? cJSON_CreateNull() : cJSON_CreateNumber(metrics_value(mt, val_row, "step")));

    /* Final metrics: the last finite value of every column, with low-rank columns grouped. */
    cJSON *final = cJSON_AddObjectToObject(root, "final");
    cJSON *low_rank = NULL;
    for (int c = 0; c < mt->n_cols; c++) {
        const char *name = mt->names[c];
        if (strcmp(name, "step") == 0 || strcmp(name, "epoch") == 0) continue;
        double v = NAN;
        for (long row = mt->n_rows - 1; row >= 0 && !isfinite(v); row--) v = mt->values[row * mt->n_cols + c];
        size_t len = strlen(name);
        int is_low_rank = (len > 4 && strcmp(name + len - 4, "_top") == 0) ||
                          (len > 7 && strcmp(name + len - 7, "_bottom") == 0);
        if (is_low_rank) {
            if (!isfinite(v)) continue;
            if (!low_rank) low_rank = cJSON_AddObjectToObject(root, "low_rank");
            cJSON_AddNumberToObject(low_rank, name, v);
        } else {
            cJSON_AddItemToObject(final, name, json_number_or_null(v));
        }
    }
    if (!low_rank) cJSON_AddNullToObject(root, "low_rank");
    if (low_rank && isfinite(run->prune)) cJSON_AddNumberToObject(low_rank, "top_fraction", run->prune);

    if (!run->has_trace) return root;
    cJSON *matrices = cJSON_AddObjectToObject(root, "matrices");
    for (int i = 0; i < run->n_matrices; i++) {
        const SpectralMetrics *last = &table->values[i][run->n_snapshots - 1];
        cJSON *m = cJSON_AddObjectToObject(matrices, run->matrices[i].name);
        cJSON *rank = cJSON_AddObjectToObject(m, "effective_rank");
        cJSON_AddItemToObject(rank, "at_train_acc_1", rank_at_row(run, table, i, train_row));
        cJSON_AddItemToObject(rank, "at_val_acc_0.95", rank_at_row(run, table, i, val_row));
        cJSON_AddItemToObject(rank, "final", json_number_or_null(last->effective_rank));
        cJSON_AddItemToObject(m, "rank90_final", json_number_or_null(last->rank90));
        cJSON_AddItemToObject(m, "stable_rank_final", json_number_or_null(last->stable_rank));
        cJSON_AddItemToObject(m, "frobenius_final", json_number_or_null(last->frobenius));
        cJSON_AddItemToObject(m, "spectral_final", json_number_or_null(last->spectral));
        cJSON_AddItemToObject(m, "nuclear_final", json_number_or_null(last->nuclear));
    }
    cJSON *alignment = cJSON_AddArrayToObject(root, "alignment");
    for (int p = 0; p < run->n_pairs; p++) {
        const RunPair *pair = &run->pairs[p];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "from", pair->from);
        cJSON_AddStringToObject(o, "to", pair->to);
        cJSON_AddNumberToObject(o, "head", pair->head);
        cJSON_AddNumberToObject(o, "k", pair->k);
        const float *diag = pair->diag + (run->n_snapshots - 1) * pair->k;
        cJSON_AddItemToObject(o, "score_final", json_number_or_null(spectral_alignment_score(diag, pair->k)));
        cJSON_AddItemToArray(alignment, o);
    }
    return root;
}

int report_write_json(const Report *rep, cJSON *root) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/summary.json", rep->dir);
    char *text = cJSON_Print(root);
    FILE *f = fopen(path, "w");
    int ok = f && text && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok) {
        set_error(rep->err, rep->errlen, "writing '%s' failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

static void html_escaped(FILE *f, const char *s) {
    for (; *s; s++) {
        if (*s == '<') fputs("&lt;", f);
        else if (*s == '>') fputs("&gt;", f);
        else if (*s == '&') fputs("&amp;", f);
        else if (*s == '"') fputs("&quot;", f);
        else fputc(*s, f);
    }
}

int report_write_index(const Report *rep, const char *title, const char *intro) {
    char path[PATH_LEN];
    snprintf(path, sizeof path, "%s/index.html", rep->dir);
    FILE *f = fopen(path, "w");
    if (!f) {
        set_error(rep->err, rep->errlen, "cannot write '%s': %s", path, strerror(errno));
        return -1;
    }
    fputs("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n<title>", f);
    html_escaped(f, title);
    fputs("</title>\n<style>\nbody { font-family: sans-serif; max-width: 1040px; margin: 2em auto; color: #222; }\n"
          "figure { margin: 2em 0; } img { max-width: 100%; border: 1px solid #ddd; }\n"
          "figcaption { margin-top: 0.4em; }\n</style>\n</head>\n<body>\n<h1>",
          f);
    html_escaped(f, title);
    fputs("</h1>\n<p>", f);
    html_escaped(f, intro);
    fputs(" Headline numbers are in <a href=\"summary.json\">summary.json</a>.</p>\n", f);
    for (int i = 0; i < rep->n_figures; i++) {
        fputs("<figure>\n<img src=\"", f);
        html_escaped(f, rep->figures[i].file);
        fputs("\" alt=\"", f);
        html_escaped(f, rep->figures[i].file);
        fputs("\">\n<figcaption>", f);
        html_escaped(f, rep->figures[i].caption);
        fputs("</figcaption>\n</figure>\n", f);
    }
    fputs("</body>\n</html>\n", f);
    if (fclose(f) != 0) {
        set_error(rep->err, rep->errlen, "writing '%s' failed: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- entry points ----------------------------------------------------------- */

int report_run(const RunData *run, const char *out_dir, char *err, size_t errlen) {
    if (sd_make_dirs(out_dir, err, errlen) != 0) return -1;
    Report rep = {.dir = out_dir, .err = err, .errlen = errlen};
    SpectralTable table = {0};
    double *x = NULL;

    int rc = curves_figure(&rep, run, 0);
    if (rc == 0) rc = curves_figure(&rep, run, 1);
    if (rc == 0 && run->has_trace) {
        table = spectral_table(run);
        x = snapshot_steps(run);
        rc = effective_rank_figures(&rep, run, &table, x);
        if (rc == 0) rc = singular_value_figures(&rep, run, x);
        if (rc == 0) rc = sva_figures(&rep, run, x);
        if (rc == 0) rc = alignment_figures(&rep, run, x);
        if (rc == 0) rc = write_spectral_csv(&rep, run, &table);
    }
    if (rc == 0) {
        cJSON *summary = run_summary(run, &table);
        rc = report_write_json(&rep, summary);
        cJSON_Delete(summary);
    }
    if (rc == 0) {
        char title[512], intro[1024];
        snprintf(title, sizeof title, "specdyn report: %s", run->name);
        if (run->has_trace)
            snprintf(intro, sizeof intro,
                     "Run directory %s: %ld metrics rows up to step %.0f, %ld trace snapshots up to step %ld; r = "
                     "min(m, n) for an m × n matrix.",
                     run->dir, run->metrics.n_rows, metrics_value(&run->metrics, run->metrics.n_rows - 1, "step"),
                     run->n_snapshots, run->steps[run->n_snapshots - 1]);
        else
            snprintf(intro, sizeof intro,
                     "Run directory %s: %ld metrics rows up to step %.0f; tracing was disabled (trace.every = 0), "
                     "so there are no spectral figures.",
                     run->dir, run->metrics.n_rows, metrics_value(&run->metrics, run->metrics.n_rows - 1, "step"));
        rc = report_write_index(&rep, title, intro);
    }
    spectral_table_free(&table);
    free(x);
    free(rep.figures);
    return rc;
}

/* Validation accuracy of every run (solid), with train accuracy (dashed). */
static int compare_accuracy(Report *rep, const RunData *runs, int n_runs, const char *const *names) {
    PlotSeries *series = sd_calloc((size_t)(2 * n_runs), sizeof(PlotSeries));
    double **buffers = sd_calloc((size_t)(3 * n_runs), sizeof(double *));
    char (*labels)[160] = sd_calloc((size_t)(2 * n_runs), sizeof *labels);
    int n = 0;
    for (int r = 0; r < n_runs; r++) {
        const MetricsTable *t = &runs[r].metrics;
        double *x = buffers[3 * r] = metrics_steps(t);
        const char *columns[2] = {"val_acc", "train_acc"};
        for (int s = 0; s < 2; s++) {
            double *y = buffers[3 * r + 1 + s] = metrics_series(t, columns[s], NULL);
            if (!y) continue;
            snprintf(labels[n], sizeof labels[n], "%s, %s", names[r], s == 0 ? "validation" : "train");
            series[n] = (PlotSeries){labels[n], x, y, t->n_rows, plot_category_color(r, n_runs),
                                     s == 0 ? PLOT_SOLID : PLOT_LONG_DASHED};
            n++;
        }
    }
    PlotAxes axes = {"accuracy", "step", "accuracy", 0, 0.0, 1.02, 0};
    int rc = n ? draw_lines(rep, "compare_accuracy.png", &axes, series, n) : 0;
    if (rc == 0 && n)
        report_add_figure(rep, "compare_accuracy.png",
                   "Validation accuracy (solid) and train accuracy (dashed) of each run over training steps.");
    for (int i = 0; i < 3 * n_runs; i++) free(buffers[i]);
    free(buffers);
    free(series);
    free(labels);
    return rc;
}

static const RunMatrix *find_matrix(const RunData *run, const char *name) {
    for (int i = 0; run->has_trace && i < run->n_matrices; i++)
        if (strcmp(run->matrices[i].name, name) == 0) return &run->matrices[i];
    return NULL;
}

/* Effective rank of one matrix in every run that traced it. */
static int compare_matrix_rank(Report *rep, const RunData *runs, int n_runs, const char *const *names,
                               const RunMatrix *first) {
    PlotSeries *series = sd_calloc((size_t)n_runs, sizeof(PlotSeries));
    double **buffers = sd_calloc((size_t)(2 * n_runs), sizeof(double *));
    int n = 0;
    for (int r = 0; r < n_runs; r++) {
        const RunMatrix *mat = find_matrix(&runs[r], first->name);
        if (!mat) continue;
        long T = runs[r].n_snapshots;
        double *x = buffers[2 * r] = snapshot_steps(&runs[r]);
        double *y = buffers[2 * r + 1] = sd_malloc((size_t)T * sizeof(double));
        for (long t = 0; t < T; t++) y[t] = spectral_effective_rank(mat->sv + t * mat->r, mat->r);
        series[n++] = (PlotSeries){names[r], x, y, T, plot_category_color(r, n_runs), plot_category_style(r, n_runs)};
    }
    char title[512], file[400], part[300];
    snprintf(title, sizeof title, "effective rank of %s", first->label);
    report_file_part(first->name, part, sizeof part);
    snprintf(file, sizeof file, "compare_effective_rank_%s.png", part);
    PlotAxes axes = {title, "step", "effective rank / r", 0, 0.0, 0.0, 0};
    int rc = draw_lines(rep, file, &axes, series, n);
    if (rc == 0) report_add_figure(rep, file, "Effective rank / r of %s in each run over training steps.", first->name);
    for (int i = 0; i < 2 * n_runs; i++) free(buffers[i]);
    free(buffers);
    free(series);
    return rc;
}

int report_compare(const RunData *runs, int n_runs, const char *out_dir, char *err, size_t errlen) {
    if (sd_make_dirs(out_dir, err, errlen) != 0) return -1;
    Report rep = {.dir = out_dir, .err = err, .errlen = errlen};

    /* Runs are labelled by directory name, or by the path given when two names clash. */
    const char **names = sd_calloc((size_t)n_runs, sizeof(char *));
    for (int r = 0; r < n_runs; r++) {
        names[r] = runs[r].name;
        for (int q = 0; q < n_runs; q++)
            if (q != r && strcmp(runs[q].name, runs[r].name) == 0) names[r] = runs[r].dir;
    }

    int rc = compare_accuracy(&rep, runs, n_runs, names);
    /* One figure per matrix name, in the order of first appearance. */
    for (int r = 0; rc == 0 && r < n_runs; r++) {
        for (int i = 0; rc == 0 && runs[r].has_trace && i < runs[r].n_matrices; i++) {
            const RunMatrix *mat = &runs[r].matrices[i];
            int seen = 0;
            for (int q = 0; q < r && !seen; q++) seen = find_matrix(&runs[q], mat->name) != NULL;
            if (!seen) rc = compare_matrix_rank(&rep, runs, n_runs, names, mat);
        }
    }

    if (rc == 0) {
        cJSON *root = cJSON_CreateObject();
        cJSON *list = cJSON_AddArrayToObject(root, "runs");
        for (int r = 0; r < n_runs; r++) {
            SpectralTable table = {0};
            if (runs[r].has_trace) table = spectral_table(&runs[r]);
            cJSON_AddItemToArray(list, run_summary(&runs[r], &table));
            spectral_table_free(&table);
        }
        rc = report_write_json(&rep, root);
        cJSON_Delete(root);
    }
    if (rc == 0) {
        char intro[2048] = "Runs compared:";
        for (int r = 0; r < n_runs; r++)
            snprintf(intro + strlen(intro), sizeof intro - strlen(intro), "%s %s", r ? "," : "", runs[r].dir);
        snprintf(intro + strlen(intro), sizeof intro - strlen(intro), ".");
        rc = report_write_index(&rep, "specdyn comparison", intro);
    }
    free(names);
    free(rep.figures);
    return rc;
}
