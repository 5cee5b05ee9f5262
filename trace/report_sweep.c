/* The sweep report: runs grouped over seeds, means and standard deviations,
 * and the sweep figures; see report_sweep() in report.h.
 *
 * Dimension letters: G groups (grid points without the seed), S runs of a
 * group (its seeds), M traced matrices, T snapshots. Standard deviations
 * are sample standard deviations (n - 1 in the denominator), null for a
 * group with one run. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "config.h"
#include "error.h"
#include "plot_sweep.h"
#include "report.h"
#include "report_internal.h"
#include "spectral.h"
#include "sweep.h"

#define PATH_LEN 4096
#define FIG_WIDTH 1000
#define FIG_HEIGHT 620
#define WEIGHT_DECAY_KEY "optim.weight_decay"

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

typedef struct {
    double mean, std;    /* std is NaN for n < 2 */
    int n;
} Stat;

static Stat stat_of(const double *v, int count) {
    Stat st = {NAN, NAN, 0};
    double sum = 0.0;
    for (int i = 0; i < count; i++)
        if (isfinite(v[i])) {
            sum += v[i];
            st.n++;
        }
    if (st.n == 0) return st;
    st.mean = sum / st.n;
    if (st.n < 2) return st;
    double ss = 0.0;
    for (int i = 0; i < count; i++)
        if (isfinite(v[i])) ss += (v[i] - st.mean) * (v[i] - st.mean);
    st.std = sqrt(ss / (st.n - 1));
    return st;
}

/* One grid point: the runs that differ only by seed. */
typedef struct {
    const char *name;            /* the manifest's group */
    char *const *values;         /* [n_keys] grid values of its first run */
    int n_runs;
    int *runs;                   /* [S] indices into the loaded runs */
    double x;                    /* position on the x axis of the sweep figures */
    int panel;                   /* index of its combination of the other grid keys */
} Group;

typedef struct {
    SweepManifest manifest;
    int n_loaded;
    RunData *runs;               /* [n_loaded] */
    long *steps_goal;            /* [n_loaded] train.steps from config.ini, -1 when unknown */
    const ManifestRun **entries; /* [n_loaded] the manifest entry of each loaded run */
    int n_groups;
    Group *groups;
    int x_key;                   /* index of the x-axis key in manifest.keys, -1 when only seeds vary */
    int n_panels;
    char **panel_names;          /* [n_panels] "key=value, ..." of the other keys, "" for one panel */
    int n_missing;
} SweepData;

/* The last finite value of a metrics column, or NaN. */
static double final_metric(const RunData *run, const char *column) {
    int c = metrics_column(&run->metrics, column);
    if (c < 0) return NAN;
    for (long row = run->metrics.n_rows - 1; row >= 0; row--) {
        double v = run->metrics.values[row * run->metrics.n_cols + c];
        if (isfinite(v)) return v;
    }
    return NAN;
}

static const RunMatrix *matrix_named(const RunData *run, const char *name) {
    for (int i = 0; run->has_trace && i < run->n_matrices; i++)
        if (strcmp(run->matrices[i].name, name) == 0) return &run->matrices[i];
    return NULL;
}

static double final_rank(const RunData *run, const char *matrix) {
    const RunMatrix *m = matrix_named(run, matrix);
    if (!m || run->n_snapshots == 0) return NAN;
    return spectral_effective_rank(m->sv + (run->n_snapshots - 1) * m->r, m->r);
}

static int load_runs(SweepData *d, const char *dir, char *err, size_t errlen) {
    int n = d->manifest.n_runs;
    d->runs = sd_calloc((size_t)(n > 0 ? n : 1), sizeof(RunData));
    d->steps_goal = sd_calloc((size_t)(n > 0 ? n : 1), sizeof(long));
    d->entries = sd_calloc((size_t)(n > 0 ? n : 1), sizeof(ManifestRun *));
    char path[PATH_LEN], message[1024];
    for (int r = 0; r < n; r++) {
        const ManifestRun *entry = &d->manifest.runs[r];
        snprintf(path, sizeof path, "%s/%s", dir, entry->name);
        struct stat st;
        if (stat(path, &st) != 0) {
            d->n_missing++;
            continue;
        }
        RunData *run = &d->runs[d->n_loaded];
        if (run_load(path, run, message, sizeof message) != 0) {
            sd_warn("leaving run %s out of the sweep report: %s", entry->name, message);
            d->n_missing++;
            continue;
        }
        Config cfg;
        config_defaults(&cfg);
        snprintf(path, sizeof path, "%s/%s/config.ini", dir, entry->name);
        d->steps_goal[d->n_loaded] = config_load(&cfg, path, message, sizeof message) == 0 ? cfg.steps : -1;
        d->entries[d->n_loaded] = entry;
        d->n_loaded++;
    }
    if (d->n_loaded == 0) {
        set_error(err, errlen, "no run of the sweep in '%s' has data yet (%d runs listed in sweep.json)", dir, n);
        return -1;
    }
    return 0;
}

static int run_complete(const SweepData *d, int r) {
    const MetricsTable *t = &d->runs[r].metrics;
    return d->steps_goal[r] > 0 && metrics_value(t, t->n_rows - 1, "step") >= (double)d->steps_goal[r];
}

/* Group the loaded runs, choose the x-axis key (weight decay when it is a
 * grid key, else the first grid key) and number the panels formed by the
 * other keys' values. */
static void build_groups(SweepData *d) {
    const SweepManifest *m = &d->manifest;
    d->groups = sd_calloc((size_t)d->n_loaded, sizeof(Group));
    for (int r = 0; r < d->n_loaded; r++) {
        const ManifestRun *entry = d->entries[r];
        int g = 0;
        while (g < d->n_groups && strcmp(d->groups[g].name, entry->group) != 0) g++;
        if (g == d->n_groups) {
            d->groups[g].name = entry->group;
            d->groups[g].values = entry->values;
            d->groups[g].runs = sd_calloc((size_t)d->n_loaded, sizeof(int));
            d->n_groups++;
        }
        d->groups[g].runs[d->groups[g].n_runs++] = r;
    }

    d->x_key = m->n_keys > 0 ? 0 : -1;
    for (int k = 0; k < m->n_keys; k++)
        if (strcmp(m->keys[k], WEIGHT_DECAY_KEY) == 0) d->x_key = k;

    d->panel_names = sd_calloc((size_t)d->n_groups, sizeof(char *));
    for (int g = 0; g < d->n_groups; g++) {
        char name[1024] = "";
        for (int k = 0; k < m->n_keys; k++) {
            if (k == d->x_key) continue;
            size_t len = strlen(name);
            snprintf(name + len, sizeof name - len, "%s%s=%s", len ? ", " : "", m->keys[k], d->groups[g].values[k]);
        }
        int p = 0;
        while (p < d->n_panels && strcmp(d->panel_names[p], name) != 0) p++;
        if (p == d->n_panels) d->panel_names[d->n_panels++] = sd_strdup(name);
        d->groups[g].panel = p;
    }
}

static void sweep_data_free(SweepData *d) {
    for (int r = 0; r < d->n_loaded; r++) run_free(&d->runs[r]);
    free(d->runs);
    free(d->steps_goal);
    free(d->entries);
    for (int g = 0; g < d->n_groups; g++) free(d->groups[g].runs);
    free(d->groups);
    for (int p = 0; p < d->n_panels; p++) free(d->panel_names[p]);
    free(d->panel_names);
    sweep_manifest_free(&d->manifest);
}

/* ---- the x axis ---------------------------------------------------------------------- */

typedef struct {
    double xmin, xmax, break_x;
    int n_ticks, n_minor;
    double tick_x[64], minor_x[256];
    char tick_text[64][48];
    const char *tick_labels[64];
    int log_axis;
    const char *label;           /* the x key */
} XAxis;

/* Place each group on the x axis. Numeric values that are all >= 0 and span
 * at least a factor of 10 (or include 0) go on a log10 axis. A value of 0
 * has no place on a log axis, so it sits one decade left of the smallest
 * positive value, at a tick labelled 0 behind an axis break: weight decay 0
 * is the natural left end of a sweep over decades, and the break shows that
 * the distance to it means nothing. Other numeric values go on a linear
 * axis; non-numeric values are categories, in file order. */
static void place_groups(SweepData *d, XAxis *ax) {
    memset(ax, 0, sizeof *ax);
    ax->break_x = NAN;
    ax->label = d->x_key >= 0 ? d->manifest.keys[d->x_key] : "grid point";
    int numeric = d->x_key >= 0, has_zero = 0, negative = 0;
    double min_pos = INFINITY, max_pos = 0.0;
    for (int g = 0; g < d->n_groups && numeric; g++) {
        const char *text = d->groups[g].values[d->x_key];
        char *end;
        double v = strtod(text, &end);
        if (end == text || *end != '\0' || !isfinite(v)) {
            numeric = 0;
            break;
        }
        d->groups[g].x = v;
        if (v == 0.0) has_zero = 1;
        if (v < 0.0) negative = 1;
        if (v > 0.0) {
            min_pos = fmin(min_pos, v);
            max_pos = fmax(max_pos, v);
        }
    }
    if (!numeric) {
        /* Categories: one tick per distinct value, in order of appearance. */
        for (int g = 0; g < d->n_groups; g++) {
            const char *text = d->x_key >= 0 ? d->groups[g].values[d->x_key] : d->groups[g].name;
            int t = 0;
            while (t < ax->n_ticks && strcmp(ax->tick_text[t], text) != 0) t++;
            if (t == ax->n_ticks && t < 64) {
                snprintf(ax->tick_text[t], sizeof ax->tick_text[t], "%s", text);
                ax->tick_x[t] = t;
                ax->n_ticks++;
            }
            d->groups[g].x = t;
        }
        ax->xmin = -0.5;
        ax->xmax = ax->n_ticks - 0.5;
    } else if (!negative && max_pos > 0.0 && (has_zero || max_pos / min_pos >= 10.0)) {
        ax->log_axis = 1;
        int lo = (int)floor(log10(min_pos) + 1e-9), hi = (int)ceil(log10(max_pos) - 1e-9);
        double zero_x = lo - 1.0;
        for (int g = 0; g < d->n_groups; g++) d->groups[g].x = d->groups[g].x > 0 ? log10(d->groups[g].x) : zero_x;
        if (has_zero) {
            snprintf(ax->tick_text[ax->n_ticks], sizeof ax->tick_text[0], "0");
            ax->tick_x[ax->n_ticks++] = zero_x;
            ax->break_x = zero_x + 0.5;
        }
        for (int k = lo; k <= hi && ax->n_ticks < 64; k++) {
            if (k == 0)
                snprintf(ax->tick_text[ax->n_ticks], sizeof ax->tick_text[0], "1");
            else
                snprintf(ax->tick_text[ax->n_ticks], sizeof ax->tick_text[0], "10#u%d#d", k);
            ax->tick_x[ax->n_ticks++] = k;
            for (int j = 2; j <= 9 && k < hi && ax->n_minor < 256; j++) ax->minor_x[ax->n_minor++] = k + log10(j);
        }
        ax->xmin = (has_zero ? zero_x : lo) - 0.35;
        ax->xmax = hi + 0.35;
    } else {
        double lo = INFINITY, hi = -INFINITY;
        for (int g = 0; g < d->n_groups; g++) {
            lo = fmin(lo, d->groups[g].x);
            hi = fmax(hi, d->groups[g].x);
        }
        double step = hi > lo ? pow(10.0, floor(log10((hi - lo) / 2.0))) : 1.0;
        for (double v = ceil(lo / step) * step; v <= hi + 1e-9 * step && ax->n_ticks < 64; v += step) {
            snprintf(ax->tick_text[ax->n_ticks], sizeof ax->tick_text[0], "%g", v);
            ax->tick_x[ax->n_ticks++] = v;
        }
        double pad = hi > lo ? 0.06 * (hi - lo) : 0.5;
        ax->xmin = lo - pad;
        ax->xmax = hi + pad;
    }
    for (int t = 0; t < ax->n_ticks; t++) ax->tick_labels[t] = ax->tick_text[t];
}

static ErrorBarAxes error_axes(const XAxis *ax, const char *title, const char *ylabel, double ymin, double ymax) {
    ErrorBarAxes a = {title, ax->label, ylabel, ax->xmin, ax->xmax, ymin, ymax, ax->n_ticks, ax->tick_x,
                      ax->tick_labels, ax->n_minor, ax->minor_x, ax->break_x};
    return a;
}

/* Groups of panel p, sorted by x. Returns the count. */
static int panel_groups(const SweepData *d, int p, int *out) {
    int n = 0;
    for (int g = 0; g < d->n_groups; g++)
        if (d->groups[g].panel == p) out[n++] = g;
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && d->groups[out[j]].x < d->groups[out[j - 1]].x; j--) {
            int t = out[j];
            out[j] = out[j - 1];
            out[j - 1] = t;
        }
    return n;
}

static void panel_suffix(const SweepData *d, int p, char *out, size_t len) {
    if (d->n_panels == 1) {
        out[0] = '\0';
        return;
    }
    char part[512];
    report_file_part(d->panel_names[p], part, sizeof part);
    snprintf(out, len, "_%s", part);
}

/* Traced matrices of the first run with a trace, in model order. */
static const RunData *trace_reference(const SweepData *d) {
    for (int r = 0; r < d->n_loaded; r++)
        if (d->runs[r].has_trace && d->runs[r].n_snapshots > 0) return &d->runs[r];
    return NULL;
}

/* ---- figures ------------------------------------------------------------------------------ */

static Stat group_final_rank(const SweepData *d, const Group *g, const char *matrix) {
    double values[256];
    int n = 0;
    for (int i = 0; i < g->n_runs && n < 256; i++) values[n++] = final_rank(&d->runs[g->runs[i]], matrix);
    return stat_of(values, n);
}

static Stat group_final_metric(const SweepData *d, const Group *g, const char *column) {
    double values[256];
    int n = 0;
    for (int i = 0; i < g->n_runs && n < 256; i++) values[n++] = final_metric(&d->runs[g->runs[i]], column);
    return stat_of(values, n);
}

static int final_rank_figures(Report *rep, const SweepData *d, const XAxis *ax, const RunData *ref) {
    int *order = sd_malloc((size_t)d->n_groups * sizeof(int));
    int n_mat = ref->n_matrices < 64 ? ref->n_matrices : 64;
    double *x = sd_malloc((size_t)d->n_groups * sizeof(double));
    double *y = sd_malloc((size_t)n_mat * d->n_groups * sizeof(double));
    double *e = sd_malloc((size_t)n_mat * d->n_groups * sizeof(double));
    ErrorBarSeries series[64];
    int rc = 0;
    for (int p = 0; p < d->n_panels && rc == 0; p++) {
        int n = panel_groups(d, p, order);
        double top = 0.0;
        for (int i = 0; i < n; i++) x[i] = d->groups[order[i]].x;
        for (int m = 0; m < n_mat; m++) {
            for (int i = 0; i < n; i++) {
                Stat st = group_final_rank(d, &d->groups[order[i]], ref->matrices[m].name);
                y[m * n + i] = st.mean;
                e[m * n + i] = st.std;
                if (isfinite(st.mean)) top = fmax(top, st.mean + (isfinite(st.std) ? st.std : 0.0));
            }
            series[m] = (ErrorBarSeries){ref->matrices[m].label, x, y + m * n, e + m * n, n,
                                         plot_category_color(m, n_mat), plot_category_style(m, n_mat)};
        }
        char title[1200], file[700], suffix[600], path[PATH_LEN];
        snprintf(title, sizeof title, "%s: final effective rank%s%s", d->manifest.name ? d->manifest.name : "sweep",
                 d->n_panels > 1 ? ", " : "", d->panel_names[p]);
        panel_suffix(d, p, suffix, sizeof suffix);
        snprintf(file, sizeof file, "sweep_final_effective_rank%s.png", suffix);
        snprintf(path, sizeof path, "%s/%s", rep->dir, file);
        ErrorBarAxes axes = error_axes(ax, title, "effective rank / r", 0.0, fmin(1.0, 1.08 * top + 0.02));
        rc = plot_error_bars(path, FIG_WIDTH, FIG_HEIGHT, &axes, series, n_mat, rep->err, rep->errlen);
        if (rc == 0)
            report_add_figure(rep, file,
                              "Effective rank / r of every traced matrix at the end of training against %s%s; points "
                              "are the mean over seeds, bars ±1 sample standard deviation.%s",
                              ax->label, ax->log_axis ? " (log scale)" : "",
                              isfinite(ax->break_x) ? " The tick labelled 0 sits one decade left of the smallest "
                                                      "non-zero value, behind an axis break."
                                                    : "");
    }
    free(order);
    free(x);
    free(y);
    free(e);
    return rc;
}

static int final_accuracy_figure(Report *rep, const SweepData *d, const XAxis *ax) {
    int n_series = 2 * d->n_panels < 64 ? 2 * d->n_panels : 64;
    int *order = sd_malloc((size_t)d->n_groups * sizeof(int));
    double *x = sd_malloc((size_t)n_series * d->n_groups * sizeof(double));
    double *y = sd_malloc((size_t)n_series * d->n_groups * sizeof(double));
    double *e = sd_malloc((size_t)n_series * d->n_groups * sizeof(double));
    char (*labels)[600] = sd_calloc((size_t)n_series, sizeof *labels);
    ErrorBarSeries series[64];
    int count = 0;
    for (int p = 0; p < d->n_panels && count + 1 < 64; p++) {
        int n = panel_groups(d, p, order);
        const char *columns[2] = {"val_acc", "train_acc"};
        for (int c = 0; c < 2; c++) {
            double *xs = x + count * d->n_groups, *ys = y + count * d->n_groups, *es = e + count * d->n_groups;
            for (int i = 0; i < n; i++) {
                Stat st = group_final_metric(d, &d->groups[order[i]], columns[c]);
                xs[i] = d->groups[order[i]].x;
                ys[i] = st.mean;
                es[i] = st.std;
            }
            snprintf(labels[count], sizeof labels[count], "%s%s%s", c == 0 ? "validation" : "train",
                     d->n_panels > 1 ? ", " : "", d->panel_names[p]);
            series[count] = (ErrorBarSeries){labels[count], xs, ys, es, n, plot_category_color(p, d->n_panels),
                                             c == 0 ? PLOT_SOLID : PLOT_LONG_DASHED};
            count++;
        }
    }
    char title[600], path[PATH_LEN];
    snprintf(title, sizeof title, "%s: final accuracy", d->manifest.name ? d->manifest.name : "sweep");
    snprintf(path, sizeof path, "%s/sweep_final_accuracy.png", rep->dir);
    ErrorBarAxes axes = error_axes(ax, title, "accuracy", 0.0, 1.04);
    int rc = plot_error_bars(path, FIG_WIDTH, FIG_HEIGHT, &axes, series, count, rep->err, rep->errlen);
    if (rc == 0)
        report_add_figure(rep, "sweep_final_accuracy.png",
                          "Validation (solid) and train (dashed) accuracy at the end of training against %s; mean "
                          "over seeds with ±1 sample standard deviation bars.",
                          ax->label);
    free(order);
    free(x);
    free(y);
    free(e);
    free(labels);
    return rc;
}

/* Mean and std of a matrix's effective rank over a group's seeds at each
 * snapshot they all have: the steps of the shortest run, which must match
 * the other runs' first steps. Returns T, 0 when the group has no trace. */
static long group_rank_curve(const SweepData *d, const Group *g, const char *matrix, double **steps, double **mean,
                             double **std) {
    long T = -1;
    const RunData *shortest = NULL;
    for (int i = 0; i < g->n_runs; i++) {
        const RunData *run = &d->runs[g->runs[i]];
        if (!matrix_named(run, matrix)) continue;
        if (T < 0 || run->n_snapshots < T) {
            T = run->n_snapshots;
            shortest = run;
        }
    }
    if (T <= 0) return 0;
    *steps = sd_malloc((size_t)T * sizeof(double));
    *mean = sd_malloc((size_t)T * sizeof(double));
    *std = sd_malloc((size_t)T * sizeof(double));
    double values[256];
    for (long t = 0; t < T; t++) {
        int n = 0;
        for (int i = 0; i < g->n_runs && n < 256; i++) {
            const RunData *run = &d->runs[g->runs[i]];
            const RunMatrix *m = matrix_named(run, matrix);
            if (!m || run->steps[t] != shortest->steps[t]) continue;
            values[n++] = spectral_effective_rank(m->sv + t * m->r, m->r);
        }
        Stat st = stat_of(values, n);
        (*steps)[t] = (double)shortest->steps[t];
        (*mean)[t] = st.mean;
        (*std)[t] = st.std;
    }
    return T;
}

/* Colour of a group in the over-time overlays: viridis by rank along the x axis. */
static PlotColor group_color(const SweepData *d, int g) {
    int rank = 0, distinct = 0;
    for (int h = 0; h < d->n_groups; h++) {
        int first = 1;
        for (int k = 0; k < h; k++)
            if (d->groups[k].x == d->groups[h].x) first = 0;
        if (!first) continue;
        distinct++;
        if (d->groups[h].x < d->groups[g].x) rank++;
    }
    return plot_colormap_color(COLORMAP_VIRIDIS, distinct > 1 ? 0.85 * rank / (distinct - 1) : 0.0);
}

static void group_label(const SweepData *d, const Group *g, char *out, size_t len) {
    out[0] = '\0';
    for (int k = 0; k < d->manifest.n_keys; k++) {
        size_t used = strlen(out);
        const char *key = strrchr(d->manifest.keys[k], '.');
        snprintf(out + used, len - used, "%s%s = %s", used ? ", " : "", key ? key + 1 : d->manifest.keys[k],
                 g->values[k]);
    }
    if (!out[0]) snprintf(out, len, "%s", g->name);
}

static int rank_over_time_figures(Report *rep, const SweepData *d, const RunData *ref, FILE *csv) {
    int n_groups = d->n_groups < 64 ? d->n_groups : 64;
    BandSeries series[64];
    double *buffers[64][3];
    char labels[64][300];
    int order[64];
    /* Legend in x order. */
    int *sorted = sd_malloc((size_t)d->n_groups * sizeof(int));
    int n_sorted = 0;
    for (int p = 0; p < d->n_panels; p++) n_sorted += panel_groups(d, p, sorted + n_sorted);
    for (int i = 0; i < n_groups; i++) order[i] = sorted[i];
    free(sorted);
    int rc = 0;
    for (int m = 0; m < ref->n_matrices && rc == 0; m++) {
        const char *matrix = ref->matrices[m].name;
        int n = 0;
        for (int i = 0; i < n_groups; i++) {
            const Group *g = &d->groups[order[i]];
            long T = group_rank_curve(d, g, matrix, &buffers[n][0], &buffers[n][1], &buffers[n][2]);
            if (T == 0) continue;
            for (long t = 0; t < T; t++)
                fprintf(csv, "%s,%s,%.0f,%.9g,%.9g\n", g->name, matrix, buffers[n][0][t], buffers[n][1][t],
                        buffers[n][2][t]);
            group_label(d, g, labels[n], sizeof labels[n]);
            series[n] = (BandSeries){labels[n], buffers[n][0], buffers[n][1], buffers[n][2], T, group_color(d, order[i])};
            n++;
        }
        char title[600], file[400], part[300], path[PATH_LEN];
        snprintf(title, sizeof title, "%s: effective rank of %s, mean ± std over seeds",
                 d->manifest.name ? d->manifest.name : "sweep", ref->matrices[m].label);
        report_file_part(matrix, part, sizeof part);
        snprintf(file, sizeof file, "sweep_effective_rank_%s.png", part);
        snprintf(path, sizeof path, "%s/%s", rep->dir, file);
        PlotAxes axes = {title, "step", "effective rank / r", 0, 0.0, 0.0, 0};
        if (n > 0) rc = plot_bands(path, FIG_WIDTH, FIG_HEIGHT, &axes, series, n, rep->err, rep->errlen);
        if (rc == 0 && n > 0)
            report_add_figure(rep, file,
                              "Effective rank / r of %s over training steps for each grid point, coloured by %s "
                              "(viridis, dark = smallest); lines are the mean over seeds, bands ±1 sample standard "
                              "deviation.",
                              matrix, d->x_key >= 0 ? d->manifest.keys[d->x_key] : "grid point");
        for (int i = 0; i < n; i++)
            for (int k = 0; k < 3; k++) free(buffers[i][k]);
    }
    return rc;
}

/* ---- summary.json ------------------------------------------------------------------------ */

static cJSON *stat_json(Stat st) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddItemToObject(o, "mean", isfinite(st.mean) ? cJSON_CreateNumber(st.mean) : cJSON_CreateNull());
    cJSON_AddItemToObject(o, "std", isfinite(st.std) ? cJSON_CreateNumber(st.std) : cJSON_CreateNull());
    cJSON_AddNumberToObject(o, "n", st.n);
    return o;
}

static cJSON *sweep_summary(const SweepData *d, const RunData *ref) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "sweep", d->manifest.name ? d->manifest.name : "");
    cJSON *keys = cJSON_AddArrayToObject(root, "grid_keys");
    for (int k = 0; k < d->manifest.n_keys; k++) cJSON_AddItemToArray(keys, cJSON_CreateString(d->manifest.keys[k]));
    cJSON_AddNumberToObject(root, "runs_listed", d->manifest.n_runs);
    cJSON_AddNumberToObject(root, "runs_reported", d->n_loaded);
    cJSON_AddStringToObject(root, "std", "sample standard deviation over seeds (n - 1), null for one seed");
    cJSON *groups = cJSON_AddArrayToObject(root, "groups");
    const char *columns[4] = {"val_acc", "val_loss", "train_acc", "train_loss"};
    for (int g = 0; g < d->n_groups; g++) {
        const Group *gr = &d->groups[g];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "group", gr->name);
        cJSON *values = cJSON_AddObjectToObject(o, "values");
        for (int k = 0; k < d->manifest.n_keys; k++) cJSON_AddStringToObject(values, d->manifest.keys[k], gr->values[k]);
        cJSON *seeds = cJSON_AddArrayToObject(o, "seeds");
        cJSON *runs = cJSON_AddArrayToObject(o, "runs");
        int complete = 0;
        for (int i = 0; i < gr->n_runs; i++) {
            cJSON_AddItemToArray(seeds, cJSON_CreateNumber((double)d->entries[gr->runs[i]]->seed));
            cJSON_AddItemToArray(runs, cJSON_CreateString(d->entries[gr->runs[i]]->name));
            complete += run_complete(d, gr->runs[i]);
        }
        cJSON_AddNumberToObject(o, "runs_complete", complete);
        cJSON *final = cJSON_AddObjectToObject(o, "final");
        for (int c = 0; c < 4; c++) cJSON_AddItemToObject(final, columns[c], stat_json(group_final_metric(d, gr, columns[c])));
        if (ref) {
            cJSON *ranks = cJSON_AddObjectToObject(o, "effective_rank_final");
            for (int m = 0; m < ref->n_matrices; m++)
                cJSON_AddItemToObject(ranks, ref->matrices[m].name, stat_json(group_final_rank(d, gr, ref->matrices[m].name)));
        }
        cJSON_AddItemToArray(groups, o);
    }
    return root;
}

/* ---- entry point ------------------------------------------------------------------------- */

int report_sweep_dir(const char *sweep_dir, const char *out_dir, char *err, size_t errlen) {
    SweepData d;
    memset(&d, 0, sizeof d);
    int status = sweep_manifest_read(sweep_dir, &d.manifest, err, errlen);
    if (status == 1) set_error(err, errlen, "'%s' has no sweep.json, so it is not a sweep directory", sweep_dir);
    if (status != 0) return -1;
    if (load_runs(&d, sweep_dir, err, errlen) != 0 || sd_make_dirs(out_dir, err, errlen) != 0) {
        sweep_data_free(&d);
        return -1;
    }
    build_groups(&d);
    XAxis ax;
    place_groups(&d, &ax);
    Report rep = {.dir = out_dir, .err = err, .errlen = errlen};
    const RunData *ref = trace_reference(&d);

    int rc = final_accuracy_figure(&rep, &d, &ax);
    if (rc == 0 && ref) rc = final_rank_figures(&rep, &d, &ax, ref);
    if (rc == 0 && ref) {
        char path[PATH_LEN];
        snprintf(path, sizeof path, "%s/sweep_effective_rank.csv", out_dir);
        FILE *csv = fopen(path, "w");
        if (!csv) {
            set_error(err, errlen, "cannot write '%s': %s", path, strerror(errno));
            rc = -1;
        } else {
            fprintf(csv, "group,matrix,step,mean,std\n");
            rc = rank_over_time_figures(&rep, &d, ref, csv);
            if (fclose(csv) != 0 && rc == 0) {
                set_error(err, errlen, "writing '%s' failed: %s", path, strerror(errno));
                rc = -1;
            }
        }
    }
    if (rc == 0) {
        cJSON *summary = sweep_summary(&d, ref);
        rc = report_write_json(&rep, summary);
        cJSON_Delete(summary);
    }
    if (rc == 0) {
        int complete = 0;
        for (int r = 0; r < d.n_loaded; r++) complete += run_complete(&d, r);
        char title[512], intro[1024];
        snprintf(title, sizeof title, "specdyn sweep: %s", d.manifest.name ? d.manifest.name : sweep_dir);
        snprintf(intro, sizeof intro,
                 "Sweep directory %s: %d grid points, %d of %d runs with data (%d complete; an incomplete run "
                 "contributes its latest values). Means and ±1 sample standard deviations are over seeds; "
                 "per-group numbers are in summary.json and effective rank over time in sweep_effective_rank.csv.",
                 sweep_dir, d.n_groups, d.n_loaded, d.manifest.n_runs, complete);
        rc = report_write_index(&rep, title, intro);
    }
    free(rep.figures);
    sweep_data_free(&d);
    return rc;
}
