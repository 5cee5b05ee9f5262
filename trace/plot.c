/* Figures with PLplot; see plot.h.
 *
 * Layout: every figure is one PLplot page of the requested pixel size. The
 * axes' viewport leaves room on the right for the legend or the colour bar,
 * sized from an estimate of the longest legend text's width. */
#include "plot.h"

#include <math.h>
#include <plplot/plplot.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"

/* cmap0 slots: background, axes and text, grid lines; series colours follow. */
enum { COLOR_BACKGROUND = 0, COLOR_INK = 1, COLOR_GRID = 2, COLOR_FIRST_SERIES = 3 };

/* Fraction of the page width taken by one character at the text scale used
 * here: an estimate, measured on 1000-pixel-wide pngcairo pages with
 * DejaVu Sans. Wider fonts can push a long legend past the page edge. */
#define CHAR_WIDTH_FRACTION 0.0125

/* Ten evenly spaced samples (t = 0, 1/9, ..., 1) of matplotlib's colour
 * maps; PLplot interpolates linearly between them.
 * NOTE: the viridis samples match several published copies of matplotlib's
 * 10-step list; magma and inferno were not checked against matplotlib. */
static const unsigned char colormap_samples[COLORMAP_COUNT][10][3] = {
    [COLORMAP_VIRIDIS] = {{0x44, 0x01, 0x54}, {0x48, 0x28, 0x78}, {0x3e, 0x49, 0x89}, {0x31, 0x68, 0x8e},
                          {0x26, 0x82, 0x8e}, {0x1f, 0x9e, 0x89}, {0x35, 0xb7, 0x79}, {0x6e, 0xce, 0x58},
                          {0xb5, 0xde, 0x2b}, {0xfd, 0xe7, 0x25}},
    [COLORMAP_MAGMA] = {{0x00, 0x00, 0x04}, {0x18, 0x0f, 0x3d}, {0x44, 0x0f, 0x76}, {0x72, 0x1f, 0x81},
                        {0x9e, 0x2f, 0x7f}, {0xcd, 0x40, 0x71}, {0xf1, 0x60, 0x5d}, {0xfd, 0x96, 0x68},
                        {0xfe, 0xca, 0x8d}, {0xfc, 0xfd, 0xbf}},
    [COLORMAP_INFERNO] = {{0x00, 0x00, 0x04}, {0x1b, 0x0c, 0x41}, {0x4a, 0x0c, 0x6b}, {0x78, 0x1c, 0x6d},
                          {0xa5, 0x2c, 0x60}, {0xcf, 0x44, 0x46}, {0xed, 0x69, 0x25}, {0xfb, 0x9b, 0x06},
                          {0xf7, 0xd1, 0x3d}, {0xfc, 0xff, 0xa4}},
};

/* Tableau 10, matplotlib's default line colours. */
static const unsigned char category_colors[10][3] = {
    {0x1f, 0x77, 0xb4}, {0xff, 0x7f, 0x0e}, {0x2c, 0xa0, 0x2c}, {0xd6, 0x27, 0x28}, {0x94, 0x67, 0xbd},
    {0x8c, 0x56, 0x4b}, {0xe3, 0x77, 0xc2}, {0x7f, 0x7f, 0x7f}, {0xbc, 0xbd, 0x22}, {0x17, 0xbe, 0xcf},
};

PlotColor plot_colormap_color(Colormap map, double t) {
    CHECK(map >= 0 && map < COLORMAP_COUNT, "colour map %d", (int)map);
    if (!(t > 0.0)) t = 0.0;
    if (t > 1.0) t = 1.0;
    double position = t * 9.0;
    int lo = (int)position;
    if (lo > 8) lo = 8;
    double frac = position - lo;
    const unsigned char *a = colormap_samples[map][lo], *b = colormap_samples[map][lo + 1];
    PlotColor c = {((1 - frac) * a[0] + frac * b[0]) / 255.0, ((1 - frac) * a[1] + frac * b[1]) / 255.0,
                   ((1 - frac) * a[2] + frac * b[2]) / 255.0};
    return c;
}

PlotColor plot_category_color(int i, int n) {
    if (n <= 20) {
        const unsigned char *c = category_colors[i % 10];
        PlotColor out = {c[0] / 255.0, c[1] / 255.0, c[2] / 255.0};
        return out;
    }
    /* Stop short of viridis' light yellow end, which is hard to see on white. */
    return plot_colormap_color(COLORMAP_VIRIDIS, 0.9 * i / (n - 1));
}

int plot_category_style(int i, int n) { return n <= 20 && i >= 10 ? PLOT_LONG_DASHED : PLOT_SOLID; }

static int to_byte(double v) {
    if (!(v > 0.0)) return 0;
    if (v > 1.0) return 255;
    return (int)lround(255.0 * v);
}

/* Start a page; n_series colours are set later with set_series_color(). */
static void page_begin(const char *path, int width, int height, int n_series) {
    plsdev("pngcairo");
    plsfnam(path);
    plspage(0.0, 0.0, width, height, 0, 0);
    plscolbg(255, 255, 255);
    plscmap0n(COLOR_FIRST_SERIES + (n_series > 0 ? n_series : 1));
    plinit();
    plscol0(COLOR_BACKGROUND, 255, 255, 255);
    plscol0(COLOR_INK, 0, 0, 0);
    plscol0(COLOR_GRID, 225, 225, 225);
    pladv(0);
    plschr(0.0, 1.0);
    /* Plain step numbers up to 999 999 instead of a "×10⁴" axis label. */
    plsxax(7, 0);
    plsyax(5, 0);
}

static void set_series_color(int slot, PlotColor c) {
    plscol0(COLOR_FIRST_SERIES + slot, to_byte(c.r), to_byte(c.g), to_byte(c.b));
}

static void axis_labels(const char *title, const char *xlabel, const char *ylabel, double ylabel_offset) {
    plcol0(COLOR_INK);
    plschr(0.0, 1.15);
    if (title) plmtex("t", 1.4, 0.5, 0.5, title);
    plschr(0.0, 1.0);
    if (xlabel) plmtex("b", 3.0, 0.5, 0.5, xlabel);
    if (ylabel) plmtex("l", ylabel_offset, 0.5, 0.5, ylabel);
}

/* ---- line plots -------------------------------------------------------------- */

static int usable(double v, int log_y) { return isfinite(v) && (!log_y || v > 0.0); }

/* Draw one series, broken into runs of usable points. */
static void draw_series(const PlotSeries *s, int log_y) {
    PLFLT *xs = sd_malloc((size_t)(s->n > 0 ? s->n : 1) * sizeof(PLFLT));
    PLFLT *ys = sd_malloc((size_t)(s->n > 0 ? s->n : 1) * sizeof(PLFLT));
    long run = 0;
    for (long i = 0; i <= s->n; i++) {
        int ok = i < s->n && isfinite(s->x[i]) && usable(s->y[i], log_y);
        if (ok) {
            xs[run] = s->x[i];
            ys[run] = log_y ? log10(s->y[i]) : s->y[i];
            run++;
            continue;
        }
        if (run == 1) plpoin(1, xs, ys, 1);
        if (run > 1) plline((PLINT)run, xs, ys);
        run = 0;
    }
    free(xs);
    free(ys);
}

int plot_lines(const char *path, int width, int height, const PlotAxes *axes, const PlotSeries *series, int n_series,
               char *err, unsigned long errlen) {
    double xmin = INFINITY, xmax = -INFINITY, ymin = INFINITY, ymax = -INFINITY;
    int n_labels = 0;
    size_t longest = 0;
    for (int s = 0; s < n_series; s++) {
        for (long i = 0; i < series[s].n; i++) {
            if (!isfinite(series[s].x[i]) || !usable(series[s].y[i], axes->log_y)) continue;
            double y = axes->log_y ? log10(series[s].y[i]) : series[s].y[i];
            xmin = fmin(xmin, series[s].x[i]);
            xmax = fmax(xmax, series[s].x[i]);
            ymin = fmin(ymin, y);
            ymax = fmax(ymax, y);
        }
        if (series[s].label) {
            n_labels++;
            if (strlen(series[s].label) > longest) longest = strlen(series[s].label);
        }
    }
    if (!(xmin <= xmax)) {
        snprintf(err, errlen, "no finite values to plot for '%s'", path);
        return -1;
    }
    if (axes->ymin != axes->ymax) {
        ymin = axes->log_y ? log10(axes->ymin) : axes->ymin;
        ymax = axes->log_y ? log10(axes->ymax) : axes->ymax;
    } else {
        double pad = ymax > ymin ? 0.05 * (ymax - ymin) : (axes->log_y ? 0.5 : fmax(0.05 * fabs(ymax), 0.5));
        ymin -= pad;
        ymax += pad;
    }
    if (xmax == xmin) {
        xmin -= 0.5;
        xmax += 0.5;
    }

    int columns = axes->legend_columns > 0 ? axes->legend_columns : (n_labels > 24 ? 2 : 1);
    int rows = (n_labels + columns - 1) / columns;
    /* Legend width: the line sample, the gap and the longest text per column. */
    double legend_width = n_labels ? columns * (0.085 + CHAR_WIDTH_FRACTION * (double)longest) + 0.02 : 0.0;
    double right = 0.97 - legend_width;
    if (right < 0.5) right = 0.5;

    page_begin(path, width, height, n_series);
    for (int s = 0; s < n_series; s++) set_series_color(s, series[s].color);
    plvpor(0.1, right, 0.13, 0.9);
    plwind(xmin, xmax, ymin, ymax);

    plcol0(COLOR_GRID);
    plwidth(1.0);
    plbox("g", 0.0, 0, axes->log_y ? "gl" : "g", 0.0, 0);
    plwidth(2.0);
    for (int s = 0; s < n_series; s++) {
        plcol0(COLOR_FIRST_SERIES + s);
        pllsty(series[s].style ? series[s].style : PLOT_SOLID);
        draw_series(&series[s], axes->log_y);
    }
    pllsty(PLOT_SOLID);
    plwidth(1.0);
    plcol0(COLOR_INK);
    plbox("bcnst", 0.0, 0, axes->log_y ? "bcnstlv" : "bcnstv", 0.0, 0);
    axis_labels(axes->title, axes->xlabel, axes->ylabel, 5.2);

    if (n_labels > 0) {
        PLINT *opts = sd_calloc((size_t)n_labels, sizeof(PLINT));
        PLINT *text_colors = sd_calloc((size_t)n_labels, sizeof(PLINT));
        PLINT *line_colors = sd_calloc((size_t)n_labels, sizeof(PLINT));
        PLINT *line_styles = sd_calloc((size_t)n_labels, sizeof(PLINT));
        PLFLT *line_widths = sd_calloc((size_t)n_labels, sizeof(PLFLT));
        const char **text = sd_calloc((size_t)n_labels, sizeof(char *));
        int e = 0;
        for (int s = 0; s < n_series; s++) {
            if (!series[s].label) continue;
            opts[e] = PL_LEGEND_LINE;
            text_colors[e] = COLOR_INK;
            line_colors[e] = COLOR_FIRST_SERIES + s;
            line_styles[e] = series[s].style ? series[s].style : PLOT_SOLID;
            line_widths[e] = 2.0;
            text[e] = series[s].label;
            e++;
        }
        PLFLT legend_w, legend_h;
        plschr(0.0, 0.95);
        pllegend(&legend_w, &legend_h, PL_LEGEND_BACKGROUND | PL_LEGEND_BOUNDING_BOX,
                 PL_POSITION_OUTSIDE | PL_POSITION_RIGHT | PL_POSITION_VIEWPORT, 0.02, 0.0, 0.075,
                 COLOR_BACKGROUND, COLOR_INK, PLOT_SOLID, rows, columns, n_labels, opts, 0.8, 1.0, 2.0, 0.0,
                 text_colors, text, NULL, NULL, NULL, NULL, line_colors, line_styles, line_widths, NULL, NULL, NULL,
                 NULL);
        free(opts);
        free(text_colors);
        free(line_colors);
        free(line_styles);
        free(line_widths);
        free(text);
    }
    plend();
    return 0;
}

/* ---- heat maps --------------------------------------------------------------- */

static void set_colormap(Colormap map) {
    PLFLT position[10], r[10], g[10], b[10], alpha[10];
    for (int i = 0; i < 10; i++) {
        position[i] = i / 9.0;
        r[i] = colormap_samples[map][i][0] / 255.0;
        g[i] = colormap_samples[map][i][1] / 255.0;
        b[i] = colormap_samples[map][i][2] / 255.0;
        alpha[i] = 1.0;
    }
    plscmap1n(256);
    plscmap1la(1, 10, position, r, g, b, alpha, NULL);
}

int plot_heatmap(const char *path, int width, int height, const PlotHeatmap *h, char *err, unsigned long errlen) {
    if (h->nx < 1 || h->ny < 1) {
        snprintf(err, errlen, "no cells to draw for '%s'", path);
        return -1;
    }
    int nx = h->nx, ny = h->ny;
    double vmin = h->vmin, vmax = h->vmax > h->vmin ? h->vmax : h->vmin + 1.0;

    /* Column edges halfway between step centres, so uneven snapshot spacing is drawn to scale. */
    PLFLT *xg = sd_malloc((size_t)(nx + 1) * sizeof(PLFLT));
    PLFLT *yg = sd_malloc((size_t)(ny + 1) * sizeof(PLFLT));
    for (int i = 1; i < nx; i++) xg[i] = 0.5 * (h->x[i - 1] + h->x[i]);
    double first_gap = nx > 1 ? h->x[1] - h->x[0] : 1.0, last_gap = nx > 1 ? h->x[nx - 1] - h->x[nx - 2] : 1.0;
    xg[0] = h->x[0] - 0.5 * first_gap;
    xg[nx] = h->x[nx - 1] + 0.5 * last_gap;
    /* Rows sit at y = 1..ny with row 0 at the top (the y axis runs downwards). */
    for (int j = 0; j <= ny; j++) yg[j] = j + 0.5;
    PLcGrid grid = {xg, yg, NULL, nx + 1, ny + 1, 0};

    /* NaN cells get a value below vmin, which plimagefr leaves undrawn. */
    PLFLT **cells = sd_malloc((size_t)nx * sizeof(PLFLT *));
    for (int i = 0; i < nx; i++) {
        cells[i] = sd_malloc((size_t)ny * sizeof(PLFLT));
        for (int j = 0; j < ny; j++) {
            double v = h->values[(long)j * nx + i];
            cells[i][j] = isnan(v) ? vmin - 1.0 : fmin(fmax(v, vmin), vmax);
        }
    }

    size_t longest = 0;
    for (int j = 0; h->row_labels && j < ny; j++)
        if (strlen(h->row_labels[j]) > longest) longest = strlen(h->row_labels[j]);
    double left = h->row_labels ? 0.03 + CHAR_WIDTH_FRACTION * (double)longest + 0.035 : 0.1;
    if (left < 0.1) left = 0.1;

    page_begin(path, width, height, 0);
    set_colormap(h->map);
    plvpor(left, 0.83, 0.13, 0.9);
    plwind(xg[0], xg[nx], ny + 0.5, 0.5);
    plimagefr((PLFLT_MATRIX)cells, nx, ny, xg[0], xg[nx], 0.5, ny + 0.5, vmin, vmax, vmin, vmax, pltr1, &grid);

    plcol0(COLOR_INK);
    if (h->row_labels) {
        plbox("bcnst", 0.0, 0, "bc", 0.0, 0);
        plschr(0.0, ny > 24 ? 0.75 : 0.95);
        /* Label every row up to 32 rows, else every n-th row so that at most 32 labels show. */
        int every = ny <= 32 ? 1 : (ny + 31) / 32;
        for (int j = 0; j < ny; j += every) plmtex("lv", 0.6, 1.0 - (j + 0.5) / ny, 1.0, h->row_labels[j]);
        plschr(0.0, 1.0);
    } else {
        plbox("bcnst", 0.0, 0, "bcnstv", 0.0, 0);
    }
    axis_labels(h->title, h->xlabel, h->row_labels ? NULL : h->ylabel, 3.5);

    PLFLT bar_w, bar_h;
    PLINT label_opts[1] = {PL_COLORBAR_LABEL_RIGHT};
    const char *labels[1] = {h->bar_label ? h->bar_label : ""};
    const char *axis_opts[1] = {"bcvtm"};
    PLFLT ticks[1] = {0.0};
    PLINT sub_ticks[1] = {0};
    PLINT n_values[1] = {2};
    PLFLT range[2] = {vmin, vmax};
    const PLFLT *values[1] = {range};
    plcolorbar(&bar_w, &bar_h, PL_COLORBAR_IMAGE, PL_POSITION_OUTSIDE | PL_POSITION_RIGHT | PL_POSITION_VIEWPORT, 0.03,
               0.0, 0.03, 1.0, COLOR_BACKGROUND, COLOR_INK, PLOT_SOLID, 0.0, 0.0, COLOR_INK, 0.0, 1, label_opts,
               labels, 1, axis_opts, ticks, sub_ticks, n_values, (PLFLT_MATRIX)values);
    plend();

    for (int i = 0; i < nx; i++) free(cells[i]);
    free(cells);
    free(xg);
    free(yg);
    return 0;
}
