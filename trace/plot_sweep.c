/* Sweep figures with PLplot; see plot_sweep.h. The page set-up, colours and
 * text sizes repeat those of plot.c so that sweep figures look like the other
 * report figures. */
#include "plot_sweep.h"

#include <math.h>
#include <plplot/plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

enum { COLOR_BACKGROUND = 0, COLOR_INK = 1, COLOR_GRID = 2, COLOR_FIRST_SERIES = 3 };

/* Fraction of the page width per legend character; the estimate of plot.c. */
#define CHAR_WIDTH_FRACTION 0.0105
/* Opacity of a ±std band. */
#define BAND_ALPHA 0.22

static int to_byte(double v) {
    if (!(v > 0.0)) return 0;
    if (v > 1.0) return 255;
    return (int)lround(255.0 * v);
}

static void page_begin(const char *path, int width, int height, int n_series) {
    plsdev("pngcairo");
    plsfnam(path);
    plspage(0.0, 0.0, width, height, 0, 0);
    plscolbg(255, 255, 255);
    plscmap0n(COLOR_FIRST_SERIES + 2 * (n_series > 0 ? n_series : 1));
    plinit();
    plscol0(COLOR_BACKGROUND, 255, 255, 255);
    plscol0(COLOR_INK, 0, 0, 0);
    plscol0(COLOR_GRID, 225, 225, 225);
    pladv(0);
    plschr(0.0, 1.0);
    plsxax(7, 0);
    plsyax(5, 0);
}

/* Series s uses slot COLOR_FIRST_SERIES + 2s opaque and the next slot translucent. */
static void set_series_color(int s, PlotColor c) {
    plscol0a(COLOR_FIRST_SERIES + 2 * s, to_byte(c.r), to_byte(c.g), to_byte(c.b), 1.0);
    plscol0a(COLOR_FIRST_SERIES + 2 * s + 1, to_byte(c.r), to_byte(c.g), to_byte(c.b), BAND_ALPHA);
}

static void axis_labels(const char *title, const char *xlabel, const char *ylabel) {
    plcol0(COLOR_INK);
    plschr(0.0, 1.15);
    if (title) plmtex("t", 1.4, 0.5, 0.5, title);
    plschr(0.0, 1.0);
    if (xlabel) plmtex("b", 3.2, 0.5, 0.5, xlabel);
    if (ylabel) plmtex("l", 5.2, 0.5, 0.5, ylabel);
}

/* Right edge of the axes, leaving room for a legend of n_labels entries. */
static double axes_right(int n_labels, size_t longest) {
    double legend_width = n_labels ? 0.085 + CHAR_WIDTH_FRACTION * (double)longest + 0.02 : 0.0;
    double right = 0.97 - legend_width;
    return right < 0.5 ? 0.5 : right;
}

static void legend(int n_series, const char *const *labels, const int *styles) {
    int n = 0;
    for (int s = 0; s < n_series; s++) n += labels[s] != NULL;
    if (n == 0) return;
    PLINT opts[64], text_colors[64], line_colors[64], line_styles[64];
    PLFLT line_widths[64];
    const char *text[64];
    int e = 0;
    for (int s = 0; s < n_series && e < 64; s++) {
        if (!labels[s]) continue;
        opts[e] = PL_LEGEND_LINE;
        text_colors[e] = COLOR_INK;
        line_colors[e] = COLOR_FIRST_SERIES + 2 * s;
        line_styles[e] = styles ? styles[s] : PLOT_SOLID;
        line_widths[e] = 2.0;
        text[e] = labels[s];
        e++;
    }
    PLFLT w, h;
    plschr(0.0, 0.95);
    pllegend(&w, &h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
             PL_POSITION_OUTSIDE | PL_POSITION_RIGHT | PL_POSITION_VIEWPORT, 0.02, 0.0, 0.075, COLOR_BACKGROUND,
             COLOR_INK, PLOT_SOLID, e, 1, e, opts, 0.8, 1.0, 2.0, 0.0, text_colors, text, NULL, NULL, NULL, NULL,
             line_colors, line_styles, line_widths, NULL, NULL, NULL, NULL);
    plschr(0.0, 1.0);
}

static void pad_range(double *lo, double *hi) {
    double pad = *hi > *lo ? 0.05 * (*hi - *lo) : fmax(0.05 * fabs(*hi), 0.5);
    *lo -= pad;
    *hi += pad;
}

/* ---- error bars -------------------------------------------------------------------- */

/* x ticks, grid lines and labels at the caller's positions, and the break mark. */
static void custom_x_axis(const ErrorBarAxes *a, double ymin, double ymax) {
    double span = ymax - ymin;
    plcol0(COLOR_GRID);
    plwidth(1.0);
    for (int i = 0; i < a->n_ticks; i++) pljoin(a->tick_x[i], ymin, a->tick_x[i], ymax);
    plcol0(COLOR_INK);
    for (int i = 0; i < a->n_ticks; i++) {
        pljoin(a->tick_x[i], ymin, a->tick_x[i], ymin + 0.02 * span);
        pljoin(a->tick_x[i], ymax, a->tick_x[i], ymax - 0.02 * span);
        double pos = (a->tick_x[i] - a->xmin) / (a->xmax - a->xmin);
        plmtex("b", 1.6, pos, 0.5, a->tick_labels[i]);
    }
    for (int i = 0; i < a->n_minor; i++) {
        pljoin(a->minor_x[i], ymin, a->minor_x[i], ymin + 0.01 * span);
        pljoin(a->minor_x[i], ymax, a->minor_x[i], ymax - 0.01 * span);
    }
    if (isfinite(a->break_x)) {
        /* Blank a gap in the bottom and top axis lines and draw "//" across each. */
        double gap = 0.012 * (a->xmax - a->xmin), slant = 0.006 * (a->xmax - a->xmin), rise = 0.025 * span;
        double ys[2] = {ymin, ymax};
        for (int k = 0; k < 2; k++) {
            plcol0(COLOR_BACKGROUND);
            plwidth(4.0);
            pljoin(a->break_x - gap, ys[k], a->break_x + gap, ys[k]);
            plcol0(COLOR_INK);
            plwidth(1.2);
            for (int side = -1; side <= 1; side += 2) {
                double x = a->break_x + side * gap;
                pljoin(x - slant, ys[k] - rise, x + slant, ys[k] + rise);
            }
        }
        plwidth(1.0);
    }
}

int plot_error_bars(const char *path, int width, int height, const ErrorBarAxes *axes, const ErrorBarSeries *series,
                    int n_series, char *err, unsigned long errlen) {
    double ymin = INFINITY, ymax = -INFINITY;
    int n_labels = 0;
    size_t longest = 0;
    CHECK(n_series <= 64, "%d series, at most 64", n_series);
    const char *labels[64];
    int styles[64];
    for (int s = 0; s < n_series; s++) {
        for (long i = 0; i < series[s].n; i++) {
            double y = series[s].y[i], e = series[s].err && isfinite(series[s].err[i]) ? series[s].err[i] : 0.0;
            if (!isfinite(y)) continue;
            ymin = fmin(ymin, y - e);
            ymax = fmax(ymax, y + e);
        }
        labels[s] = series[s].label;
        styles[s] = series[s].style ? series[s].style : PLOT_SOLID;
        if (series[s].label) {
            n_labels++;
            if (strlen(series[s].label) > longest) longest = strlen(series[s].label);
        }
    }
    if (!(ymin <= ymax)) {
        snprintf(err, errlen, "no finite values to plot for '%s'", path);
        return -1;
    }
    if (axes->ymin != axes->ymax) {
        ymin = axes->ymin;
        ymax = axes->ymax;
    } else {
        pad_range(&ymin, &ymax);
    }

    page_begin(path, width, height, n_series);
    for (int s = 0; s < n_series; s++) set_series_color(s, series[s].color);
    plvpor(0.1, axes_right(n_labels, longest), 0.14, 0.9);
    plwind(axes->xmin, axes->xmax, ymin, ymax);
    plcol0(COLOR_GRID);
    plbox("", 0.0, 0, "g", 0.0, 0);
    plcol0(COLOR_INK);
    plbox("bc", 0.0, 0, "bcnstv", 0.0, 0);
    /* After the box, so that the axis break can blank part of its lines. */
    custom_x_axis(axes, ymin, ymax);

    double cap = 0.008 * (axes->xmax - axes->xmin);
    for (int s = 0; s < n_series; s++) {
        const ErrorBarSeries *es = &series[s];
        plcol0(COLOR_FIRST_SERIES + 2 * s);
        plwidth(1.5);
        pllsty(PLOT_SOLID);
        for (long i = 0; es->err && i < es->n; i++) {
            if (!isfinite(es->y[i]) || !isfinite(es->err[i]) || es->err[i] <= 0.0) continue;
            double lo = es->y[i] - es->err[i], hi = es->y[i] + es->err[i];
            pljoin(es->x[i], lo, es->x[i], hi);
            pljoin(es->x[i] - cap, lo, es->x[i] + cap, lo);
            pljoin(es->x[i] - cap, hi, es->x[i] + cap, hi);
        }
        plwidth(2.0);
        pllsty(styles[s]);
        for (long i = 0; i + 1 < es->n; i++)
            if (isfinite(es->y[i]) && isfinite(es->y[i + 1])) pljoin(es->x[i], es->y[i], es->x[i + 1], es->y[i + 1]);
        pllsty(PLOT_SOLID);
        for (long i = 0; i < es->n; i++) {
            if (!isfinite(es->y[i])) continue;
            PLFLT px = es->x[i], py = es->y[i];
            plssym(0.0, 0.9);
            plpoin(1, &px, &py, 17); /* filled circle-like marker */
        }
    }
    plwidth(1.0);
    axis_labels(axes->title, axes->xlabel, axes->ylabel);
    legend(n_series, labels, styles);
    plend();
    return 0;
}

/* ---- mean curves with bands -------------------------------------------------------- */

int plot_bands(const char *path, int width, int height, const PlotAxes *axes, const BandSeries *series, int n_series,
               char *err, unsigned long errlen) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int n_labels = 0;
    size_t longest = 0;
    CHECK(n_series <= 64, "%d series, at most 64", n_series);
    const char *labels[64];
    for (int s = 0; s < n_series; s++) {
        const BandSeries *b = &series[s];
        for (long i = 0; i < b->n; i++) {
            if (!isfinite(b->x[i]) || !isfinite(b->mean[i])) continue;
            double e = isfinite(b->std[i]) ? b->std[i] : 0.0;
            xmin = fmin(xmin, b->x[i]);
            xmax = fmax(xmax, b->x[i]);
            ymin = fmin(ymin, b->mean[i] - e);
            ymax = fmax(ymax, b->mean[i] + e);
        }
        labels[s] = b->label;
        if (b->label) {
            n_labels++;
            if (strlen(b->label) > longest) longest = strlen(b->label);
        }
    }
    if (!(xmin <= xmax)) {
        snprintf(err, errlen, "no finite values to plot for '%s'", path);
        return -1;
    }
    if (axes->ymin != axes->ymax) {
        ymin = axes->ymin;
        ymax = axes->ymax;
    } else {
        pad_range(&ymin, &ymax);
    }
    if (xmax == xmin) {
        xmin -= 0.5;
        xmax += 0.5;
    }

    page_begin(path, width, height, n_series);
    for (int s = 0; s < n_series; s++) set_series_color(s, series[s].color);
    plvpor(0.1, axes_right(n_labels, longest), 0.13, 0.9);
    plwind(xmin, xmax, ymin, ymax);
    plcol0(COLOR_GRID);
    plbox("g", 0.0, 0, "g", 0.0, 0);

    /* Bands first, so every mean line is drawn over every band. */
    for (int s = 0; s < n_series; s++) {
        const BandSeries *b = &series[s];
        PLFLT *px = sd_malloc((size_t)(2 * b->n + 1) * sizeof(PLFLT));
        PLFLT *py = sd_malloc((size_t)(2 * b->n + 1) * sizeof(PLFLT));
        plcol0(COLOR_FIRST_SERIES + 2 * s + 1);
        /* One polygon per run of points with a finite band. */
        long start = 0;
        while (start < b->n) {
            long end = start;
            while (end < b->n && isfinite(b->mean[end]) && isfinite(b->std[end])) end++;
            long m = end - start;
            if (m >= 2) {
                for (long i = 0; i < m; i++) {
                    px[i] = b->x[start + i];
                    py[i] = fmin(fmax(b->mean[start + i] + b->std[start + i], ymin), ymax);
                    px[2 * m - 1 - i] = b->x[start + i];
                    py[2 * m - 1 - i] = fmin(fmax(b->mean[start + i] - b->std[start + i], ymin), ymax);
                }
                plfill((PLINT)(2 * m), px, py);
            }
            start = end + 1;
        }
        free(px);
        free(py);
    }
    plwidth(2.0);
    for (int s = 0; s < n_series; s++) {
        const BandSeries *b = &series[s];
        plcol0(COLOR_FIRST_SERIES + 2 * s);
        for (long i = 0; i + 1 < b->n; i++)
            if (isfinite(b->mean[i]) && isfinite(b->mean[i + 1])) pljoin(b->x[i], b->mean[i], b->x[i + 1], b->mean[i + 1]);
    }
    plwidth(1.0);
    plcol0(COLOR_INK);
    plbox("bcnst", 0.0, 0, "bcnstv", 0.0, 0);
    axis_labels(axes->title, axes->xlabel, axes->ylabel);
    legend(n_series, labels, NULL);
    plend();
    return 0;
}
