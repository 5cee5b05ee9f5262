/* Sweep figures drawn with PLplot's cairo driver in the style of plot.h:
 * points with error bars against a parameter on caller-placed x ticks (for
 * a log axis with an axis break before a tick labelled 0), and mean curves
 * with shaded ±1 standard deviation bands. Like plot.h, each call writes one
 * complete PNG and must not run concurrently with another plotting call. */
#ifndef SD_PLOT_SWEEP_H
#define SD_PLOT_SWEEP_H

#include "plot.h"

typedef struct {
    const char *label;  /* legend text; NULL leaves the series out of the legend */
    const double *x;    /* [n] positions on the x axis */
    const double *y;    /* [n]; NaN points are skipped and break the line */
    const double *err;  /* [n] half-length of each error bar, or NULL; NaN draws no bar */
    long n;
    PlotColor color;
    int style;          /* PLOT_SOLID, PLOT_SHORT_DASHED or PLOT_LONG_DASHED */
} ErrorBarSeries;

typedef struct {
    const char *title, *xlabel, *ylabel;
    double xmin, xmax;             /* x range */
    double ymin, ymax;             /* fixed y range; equal values choose it from the data */
    int n_ticks;
    const double *tick_x;          /* [n_ticks] labelled major ticks */
    const char *const *tick_labels;/* [n_ticks] PLplot text, e.g. "10#u-2#d" */
    int n_minor;
    const double *minor_x;         /* [n_minor] unlabelled minor ticks, or NULL */
    double break_x;                /* x of an axis break mark ("//"), or NaN for none */
} ErrorBarAxes;

/* Write points joined by lines with vertical error bars to path. Return 0, or
 * -1 with a message in err when no series has a finite point. */
int plot_error_bars(const char *path, int width, int height, const ErrorBarAxes *axes, const ErrorBarSeries *series,
                    int n_series, char *err, unsigned long errlen);

typedef struct {
    const char *label;
    const double *x;    /* [n] */
    const double *mean; /* [n] */
    const double *std;  /* [n]; the band is mean ± std, left out where std is NaN */
    long n;
    PlotColor color;
} BandSeries;

/* Write mean curves with translucent ±std bands to path; axes->log_y is
 * ignored. Return 0, or -1 with a message in err when nothing is finite. */
int plot_bands(const char *path, int width, int height, const PlotAxes *axes, const BandSeries *series, int n_series,
               char *err, unsigned long errlen);

#endif
