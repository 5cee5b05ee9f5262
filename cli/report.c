/* ./report: figures, index.html and summary.json for one run directory, or
 * comparison figures for several. See trace/report.h for the files written. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "report.h"
#include "rundata.h"

#define DEFAULT_COMPARE_DIR "report-compare"

static void print_usage(FILE *f) {
    fprintf(f,
            "usage: ./report [-o DIR] RUN_DIR [RUN_DIR ...]\n"
            "       ./report [-o DIR] SWEEP_DIR\n"
            "\n"
            "With a sweep directory (one with the sweep.json of ./sweep), write its report/:\n"
            "runs grouped over seeds, final accuracy and final effective rank per matrix against\n"
            "weight decay, effective rank over steps per grid point, and per-group means and\n"
            "standard deviations in summary.json.\n"
            "With one RUN_DIR, write RUN_DIR/report/: loss and error curves, singular values,\n"
            "effective rank (lines and heat map), singular vector agreement and layer\n"
            "alignment heat maps as PNG, spectral.csv, index.html and summary.json.\n"
            "With several, write comparison figures (accuracy and per-matrix effective rank\n"
            "of every run, labelled by directory name), index.html and summary.json into\n"
            "./" DEFAULT_COMPARE_DIR "/.\n"
            "\n"
            "options:\n"
            "  -o DIR      write into DIR/report/ instead (for one run or several)\n"
            "  -h, --help  print this help and exit\n"
            "\n"
            "A run that is still training is reported up to its last complete snapshot.\n"
            "Exit status: 0 on success, 1 on an error, 2 on invalid arguments.\n");
}

static void usage_error(const char *message, const char *arg) {
    fprintf(stderr, "specdyn: error: %s%s%s\n", message, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "usage: ./report [-o DIR] RUN_DIR [RUN_DIR ...]; see ./report --help\n");
    exit(2);
}

int main(int argc, char **argv) {
    const char *out_parent = NULL;
    const char **dirs = sd_calloc((size_t)argc, sizeof(char *));
    int n_dirs = 0, options_done = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (!options_done && (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0)) {
            print_usage(stdout);
            free(dirs);
            return 0;
        }
        if (!options_done && strcmp(arg, "-o") == 0) {
            if (i + 1 >= argc) usage_error("-o needs a directory", NULL);
            out_parent = argv[++i];
        } else if (!options_done && strcmp(arg, "--") == 0) {
            options_done = 1;
        } else if (!options_done && arg[0] == '-' && arg[1] != '\0') {
            usage_error("unknown option", arg);
        } else {
            dirs[n_dirs++] = arg;
        }
    }
    if (n_dirs == 0) usage_error("no run directory given", NULL);

    char err[4096];
    char sweep_manifest[4096];
    snprintf(sweep_manifest, sizeof sweep_manifest, "%s/sweep.json", dirs[0]);
    if (n_dirs == 1 && access(sweep_manifest, F_OK) == 0) {
        char out_dir[4096];
        snprintf(out_dir, sizeof out_dir, "%s/report", out_parent ? out_parent : dirs[0]);
        if (report_sweep_dir(dirs[0], out_dir, err, sizeof err) != 0) sd_fail("%s", err);
        printf("wrote %s/index.html\n", out_dir);
        free(dirs);
        return 0;
    }

    RunData *runs = sd_calloc((size_t)n_dirs, sizeof(RunData));
    for (int i = 0; i < n_dirs; i++)
        if (run_load(dirs[i], &runs[i], err, sizeof err) != 0) sd_fail("%s", err);

    char out_dir[4096];
    if (out_parent)
        snprintf(out_dir, sizeof out_dir, "%s/report", out_parent);
    else if (n_dirs == 1)
        snprintf(out_dir, sizeof out_dir, "%s/report", runs[0].dir);
    else
        snprintf(out_dir, sizeof out_dir, "%s", DEFAULT_COMPARE_DIR);

    int rc = n_dirs == 1 ? report_run(&runs[0], out_dir, err, sizeof err)
                         : report_compare(runs, n_dirs, out_dir, err, sizeof err);
    if (rc != 0) sd_fail("%s", err);
    printf("wrote %s/index.html\n", out_dir);

    for (int i = 0; i < n_dirs; i++) run_free(&runs[i]);
    free(runs);
    free(dirs);
    return 0;
}
