/* Helpers shared by the report files (report.c for runs and comparisons,
 * report_sweep.c for sweeps): the list of figures of an index.html, and
 * writers for index.html and summary.json. Not part of the report API. */
#ifndef SD_REPORT_INTERNAL_H
#define SD_REPORT_INTERNAL_H

#include <cjson/cJSON.h>
#include <stddef.h>

/* One figure of index.html. */
typedef struct {
    char file[256];
    char caption[512];
} Figure;

typedef struct {
    const char *dir;     /* output directory */
    Figure *figures;
    int n_figures, cap_figures;
    char *err;
    size_t errlen;
} Report;

/* Append a figure with a printf-style caption to rep's index. */
void report_add_figure(Report *rep, const char *file, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Write a parameter name as a file-name part into out: characters outside
 * [A-Za-z0-9._-] become '_'. */
void report_file_part(const char *name, char *out, size_t len);

/* Write root as rep->dir/summary.json. Return 0, or -1 with a message in rep->err. */
int report_write_json(const Report *rep, cJSON *root);

/* Write rep->dir/index.html with every figure and its caption. Return 0, or
 * -1 with a message in rep->err. */
int report_write_index(const Report *rep, const char *title, const char *intro);

#endif
