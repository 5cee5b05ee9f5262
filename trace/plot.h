/* PNG figures drawn with PLplot's cairo driver ("pngcairo"): line plots with
 * legends and heat maps with colour bars, on a white background.
 *
 * Each call writes one complete file; PLplot is initialised and ended inside
 * it, so calls are independent. PLplot keeps global state, so these functions
 * must not run concurrently. */
#ifndef SD_PLOT_H
#define SD_PLOT_H

/* Perceptually uniform colour maps (matplotlib's viridis, magma, inferno). */
typedef enum { COLORMAP_VIRIDIS, COLORMAP_MAGMA, COLORMAP_INFERNO, COLORMAP_COUNT } Colormap;

typedef struct {
    double r, g, b;     /* each in [0, 1] */
} PlotColor;

/* Line styles, as PLplot's pllsty numbers (PLplot has no dotted style). */
enum { PLOT_SOLID = 1, PLOT_SHORT_DASHED = 2, PLOT_LONG_DASHED = 3 };

typedef struct {
    const char *label;  /* legend text; NULL leaves the series out of the legend */
    const double *x;    /* [n] */
    const double *y;    /* [n]; NaN (and values <= 0 on a log axis) break the line */
    long n;
    PlotColor color;
    int style;          /* PLOT_SOLID, PLOT_SHORT_DASHED or PLOT_LONG_DASHED */
} PlotSeries;

typedef struct {
    const char *title;
    const char *xlabel;
    const char *ylabel;
    int log_y;          /* logarithmic y axis */
    double ymin, ymax;  /* fixed y range; equal values choose it from the data */
    int legend_columns; /* 0 chooses from the number of entries */
} PlotAxes;

/* Return the colour at t in [0, 1] of a colour map. */
PlotColor plot_colormap_color(Colormap map, double t);

/* Return colour i of n line colours: Tableau 10 for n <= 20 (repeating after
 * 10; plot_category_style() then distinguishes the lines), else n samples of
 * viridis in order. */
PlotColor plot_category_color(int i, int n);

/* Return the line style that goes with plot_category_color(i, n): solid, or
 * long dashed for the second round of Tableau 10 colours. */
int plot_category_style(int i, int n);

/* Write a line plot of n_series series with a legend right of the axes to
 * path (width × height pixels). Return 0, or -1 with a message in err when
 * no series has a plottable point. */
int plot_lines(const char *path, int width, int height, const PlotAxes *axes, const PlotSeries *series, int n_series,
               char *err, unsigned long errlen);

typedef struct {
    const char *title;
    const char *xlabel;
    const char *ylabel;
    const char *bar_label;    /* colour bar caption */
    const double *x;          /* [nx] centres of the columns, increasing (steps) */
    int nx;
    int ny;                   /* rows; row 0 is drawn at the top */
    const char *const *row_labels;  /* [ny] names drawn left of the rows, or NULL for numbers 1..ny */
    const double *values;     /* [ny, nx]; NaN cells stay blank */
    double vmin, vmax;        /* colour range; values outside are clamped */
    Colormap map;
} PlotHeatmap;

/* Write a heat map with a colour bar to path (width × height pixels).
 * Return 0, or -1 with a message in err when it has no cells. */
int plot_heatmap(const char *path, int width, int height, const PlotHeatmap *h, char *err, unsigned long errlen);

#endif
