/* ./report on fabricated run directories: the files it writes, summary.json's
 * numbers, and the errors for broken, empty and non-run directories
 * (trace/rundata.h, trace/report.h). */
#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "npy.h"
#include "report.h"
#include "rng.h"
#include "rundata.h"
#include "test.h"
#include "trace.h"

/* LeakSanitizer hook (read only in sanitizer builds): fontconfig and libltdl,
 * which PLplot's cairo driver loads, keep caches for the process lifetime. */
const char *__lsan_default_suppressions(void);
const char *__lsan_default_suppressions(void) { return "leak:libfontconfig\nleak:libltdl\n"; }

/* The fabricated run: 6 snapshots at steps 0, 100, ..., 500, train accuracy
 * reaching 1 at step 300 and validation accuracy 0.95 at step 400. */
#define SNAPSHOTS 6

typedef struct {
    const char *name;
    int m, n, k;
} FakeMatrix;

static const FakeMatrix fake_matrices[] = {
    {"embed.weight", 6, 5, 3},
    {"blocks.0.mlp.w1.weight", 4, 6, 2},
    {"unembed.weight", 5, 4, 0},
};
enum { FAKE_COUNT = 3 };

typedef struct {
    int trace_every;      /* 0: no trace directory */
    int extra_rows;       /* rows appended to embed.weight.sv.npy beyond the snapshots */
    int short_rows;       /* rows missing from blocks.0.mlp.w1.weight.sv.npy */
    int metrics_rows;     /* data rows of metrics.csv */
    int snapshots;
    int pairs;            /* write pairs.json with one pair */
    double val_acc_final; /* validation accuracy reached at step 400 */
} FakeRun;

static FakeRun default_run(void) {
    FakeRun f = {100, 0, 0, SNAPSHOTS, SNAPSHOTS, 1, 0.96};
    return f;
}

static void write_text(const char *path, const char *text) {
    FILE *f = fopen(path, "w");
    EXPECT(f != NULL, "cannot write %s", path);
    if (!f) return;
    fputs(text, f);
    fclose(f);
}

static void make_dir(const char *path) { EXPECT(mkdir(path, 0777) == 0, "mkdir %s failed", path); }

/* An appendable .npy file with `rows` rows taken from data. */
static void write_npy(const char *path, NpyDtype dtype, int n_tail, const long *tail, long rows, const void *data) {
    char err[512] = "";
    NpyAppender *a = npy_create(path, dtype, n_tail, tail, err, sizeof err);
    EXPECT(a != NULL, "npy_create: %s", err);
    if (!a) return;
    long row_elems = 1;
    for (int i = 0; i < n_tail; i++) row_elems *= tail[i];
    size_t elem = dtype == NPY_F32 ? sizeof(float) : sizeof(int64_t);
    for (long r = 0; r < rows; r++)
        EXPECT(npy_append(a, (const char *)data + (size_t)(r * row_elems) * elem, err, sizeof err) == 0, "append: %s",
               err);
    npy_close(a);
}

static void write_metrics(const char *dir, const FakeRun *f) {
    char path[1400];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    FILE *out = fopen(path, "w");
    EXPECT(out != NULL, "cannot write %s", path);
    if (!out) return;
    fputs("step,epoch,lr,train_loss,train_acc,val_loss,val_acc,wall_seconds,train_loss_top,train_acc_top,"
          "val_loss_top,val_acc_top,train_loss_bottom,train_acc_bottom,val_loss_bottom,val_acc_bottom\n",
          out);
    const double train_acc[SNAPSHOTS] = {0.1, 0.5, 0.9, 1.0, 1.0, 1.0};
    const double val_acc[SNAPSHOTS] = {0.01, 0.02, 0.1, 0.5, f->val_acc_final, f->val_acc_final};
    for (int r = 0; r < f->metrics_rows; r++) {
        double loss = 5.0 * exp(-r);
        fprintf(out, "%d,%d,0.001,%g,%f,%g,%f,%d", 100 * r, 100 * r, loss, train_acc[r], 2 * loss, val_acc[r], r);
        /* Low-rank columns on even rows only, empty fields elsewhere. */
        if (r % 2 == 0)
            fprintf(out, ",%g,%f,%g,%f,%g,%f,%g,%f\n", 2 * loss, train_acc[r] * 0.9, 3 * loss, val_acc[r] * 0.9, 4.5,
                    0.01, 4.6, 0.01);
        else
            fputs(",,,,,,,,\n", out);
    }
    /* A row still being written: no newline yet. */
    fputs("600,600,0.001,0.1", out);
    fclose(out);
}

/* Build a run directory under the test's scratch directory; return its path. */
static const char *make_run(const char *name, const FakeRun *f) {
    static char dir[1024];
    char path[1400], trace_dir[1100];
    snprintf(dir, sizeof dir, "%s/%s", test_tmpdir(), name);
    make_dir(dir);
    snprintf(path, sizeof path, "%s/config.ini", dir);
    char config[256];
    snprintf(config, sizeof config, "; fabricated\n[run]\nname = %s\n\n[trace]\nevery = %d\nvectors = 3\nprune = 0.5\n",
             name, f->trace_every);
    write_text(path, config);
    write_metrics(dir, f);
    if (f->trace_every == 0) return dir;

    snprintf(trace_dir, sizeof trace_dir, "%s/trace", dir);
    make_dir(trace_dir);
    snprintf(path, sizeof path, "%s/layers.json", trace_dir);
    char json[2048] = "[";
    for (int i = 0; i < FAKE_COUNT; i++) {
        const FakeMatrix *fm = &fake_matrices[i];
        int r = fm->m < fm->n ? fm->m : fm->n;
        snprintf(json + strlen(json), sizeof json - strlen(json),
                 "%s{\"name\": \"%s\", \"shape\": [%d, %d], \"matrix\": [%d, %d], \"role\": \"%s\", \"rank\": %d, "
                 "\"vectors\": %d}",
                 i ? ", " : "", fm->name, fm->m, fm->n, fm->m, fm->n, i == FAKE_COUNT - 1 ? "output" : "weight", r,
                 fm->k);
    }
    strcat(json, "]");
    write_text(path, json);

    int64_t steps[SNAPSHOTS];
    for (int t = 0; t < SNAPSHOTS; t++) steps[t] = 100 * t;
    snprintf(path, sizeof path, "%s/steps.npy", trace_dir);
    write_npy(path, NPY_I64, 0, NULL, f->snapshots, steps);

    /* Each snapshot is the SVD of a random matrix that drifts towards the last one. */
    Rng rng;
    rng_seed(&rng, 7, 0);
    for (int i = 0; i < FAKE_COUNT; i++) {
        const FakeMatrix *fm = &fake_matrices[i];
        int r = fm->m < fm->n ? fm->m : fm->n, rows = SNAPSHOTS + 2;
        float *a = malloc(sizeof(float) * fm->m * fm->n), *target = malloc(sizeof(float) * fm->m * fm->n);
        float *s = malloc(sizeof(float) * r * rows), *u = malloc(sizeof(float) * fm->m * (fm->k + 1) * rows);
        float *vt = malloc(sizeof(float) * (fm->k + 1) * fm->n * rows);
        for (int j = 0; j < fm->m * fm->n; j++) target[j] = (float)rng_normal(&rng);
        for (int t = 0; t < rows; t++) {
            double w = t / (double)(SNAPSHOTS - 1);
            for (int j = 0; j < fm->m * fm->n; j++) a[j] = (float)(w * (double)target[j] + (1 - w) * rng_normal(&rng));
            char err[256] = "";
            EXPECT(svd_top(a, fm->m, fm->n, fm->k, s + t * r, u + t * fm->m * fm->k, vt + t * fm->k * fm->n, err,
                           sizeof err) == 0,
                   "svd_top: %s", err);
        }
        long rows_sv = SNAPSHOTS + (i == 0 ? f->extra_rows : 0) - (i == 1 ? f->short_rows : 0);
        long sv_tail[1] = {r}, u_tail[2] = {fm->m, fm->k}, vt_tail[2] = {fm->k, fm->n};
        snprintf(path, sizeof path, "%s/%s.sv.npy", trace_dir, fm->name);
        write_npy(path, NPY_F32, 1, sv_tail, rows_sv, s);
        if (fm->k > 0) {
            snprintf(path, sizeof path, "%s/%s.u.npy", trace_dir, fm->name);
            write_npy(path, NPY_F32, 2, u_tail, SNAPSHOTS, u);
            snprintf(path, sizeof path, "%s/%s.vt.npy", trace_dir, fm->name);
            write_npy(path, NPY_F32, 2, vt_tail, SNAPSHOTS, vt);
        }
        free(a);
        free(target);
        free(s);
        free(u);
        free(vt);
    }

    if (f->pairs) {
        /* A fabricated diagonal, 0.2 · (i + 1) · t / 5 at snapshot t. */
        snprintf(path, sizeof path, "%s/align", trace_dir);
        make_dir(path);
        float diag[SNAPSHOTS * 2];
        for (int t = 0; t < SNAPSHOTS; t++)
            for (int i = 0; i < 2; i++) diag[t * 2 + i] = 0.2f * (float)(i + 1) * (float)t / 5.0f;
        long tail[1] = {2};
        snprintf(path, sizeof path, "%s/align/0000.npy", trace_dir);
        write_npy(path, NPY_F32, 1, tail, SNAPSHOTS, diag);
        snprintf(path, sizeof path, "%s/pairs.json", trace_dir);
        write_text(path, "[{\"from\": \"embed.weight\", \"to\": \"blocks.0.mlp.w1.weight\", \"head\": -1, \"k\": 2, "
                         "\"file\": \"align/0000.npy\"}]");
    }
    return dir;
}

static int is_png(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    unsigned char magic[8] = {0};
    size_t got = fread(magic, 1, 8, f);
    fclose(f);
    return got == 8 && memcmp(magic, "\x89PNG\r\n\x1a\n", 8) == 0;
}

static char *read_all(const char *path) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = calloc((size_t)len + 1, 1);
    if (fread(buf, 1, (size_t)len, f) != (size_t)len) len = 0;
    buf[len] = '\0';
    fclose(f);
    return buf;
}

static double json_number(const cJSON *o, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(item) ? item->valuedouble : (double)NAN;
}

static void report_tiny_run(void) {
    FakeRun f = default_run();
    const char *dir = make_run("tiny", &f);
    RunData run;
    char err[1024] = "", out[1200], path[1400];
    EXPECT(run_load(dir, &run, err, sizeof err) == 0, "run_load failed: %s", err);
    EXPECT(run.n_snapshots == SNAPSHOTS, "snapshots %ld", run.n_snapshots);
    EXPECT(run.metrics.n_rows == SNAPSHOTS, "metrics rows %ld (the unterminated last line must be skipped)",
           run.metrics.n_rows);
    EXPECT(run.n_pairs == 1, "pairs %d", run.n_pairs);
    EXPECT(run.n_matrices == FAKE_COUNT && strcmp(run.matrices[1].label, "mlp.w1") == 0, "label '%s'",
           run.n_matrices > 1 ? run.matrices[1].label : "");
    snprintf(out, sizeof out, "%s/report", dir);
    EXPECT(report_run(&run, out, err, sizeof err) == 0, "report_run failed: %s", err);

    const char *pngs[] = {"loss.png", "error.png", "effective_rank.png", "effective_rank_heatmap.png",
                          "singular_values_embed.weight.png", "singular_values_blocks.0.mlp.w1.weight.png",
                          "singular_values_unembed.weight.png", "sva_embed.weight.png",
                          "sva_blocks.0.mlp.w1.weight.png", "alignment_0000.png", "alignment_scores.png"};
    snprintf(path, sizeof path, "%s/index.html", out);
    char *html = read_all(path);
    EXPECT(html != NULL, "index.html missing");
    for (size_t i = 0; i < sizeof pngs / sizeof pngs[0]; i++) {
        snprintf(path, sizeof path, "%s/%s", out, pngs[i]);
        EXPECT(is_png(path), "%s is missing or not a PNG", path);
        EXPECT(html && strstr(html, pngs[i]), "index.html does not show %s", pngs[i]);
    }
    snprintf(path, sizeof path, "%s/sva_unembed.weight.png", out);
    EXPECT(!test_exists(path), "SVA figure drawn for a matrix without stored vectors");
    free(html);

    snprintf(path, sizeof path, "%s/summary.json", out);
    char *text = read_all(path);
    cJSON *summary = text ? cJSON_Parse(text) : NULL;
    EXPECT(summary != NULL, "summary.json is missing or not valid JSON");
    if (summary) {
        EXPECT(json_number(summary, "train_acc_1_step") == 300, "train_acc_1_step %g",
               json_number(summary, "train_acc_1_step"));
        EXPECT(json_number(summary, "val_acc_0.95_step") == 400, "val_acc_0.95_step %g",
               json_number(summary, "val_acc_0.95_step"));
        const cJSON *low_rank = cJSON_GetObjectItemCaseSensitive(summary, "low_rank");
        /* The last row with low-rank values is row 4 (step 400): val_acc_top = 0.96 · 0.9. */
        EXPECT(test_close(json_number(low_rank, "val_acc_top"), 0.864, 1e-6, 1e-6), "val_acc_top %g",
               json_number(low_rank, "val_acc_top"));
        const cJSON *matrices = cJSON_GetObjectItemCaseSensitive(summary, "matrices");
        EXPECT(cJSON_GetArraySize(matrices) == FAKE_COUNT, "summary has %d matrices", cJSON_GetArraySize(matrices));
        const cJSON *embed = cJSON_GetObjectItemCaseSensitive(matrices, "embed.weight");
        const cJSON *rank = cJSON_GetObjectItemCaseSensitive(embed, "effective_rank");
        const cJSON *at_train = cJSON_GetObjectItemCaseSensitive(rank, "at_train_acc_1");
        EXPECT(json_number(at_train, "snapshot_step") == 300, "snapshot step %g",
               json_number(at_train, "snapshot_step"));
        double final_rank = json_number(rank, "final");
        EXPECT(final_rank > 0 && final_rank <= 1, "final effective rank %g", final_rank);
        const cJSON *alignment = cJSON_GetObjectItemCaseSensitive(summary, "alignment");
        const cJSON *pair = cJSON_GetArrayItem(alignment, 0);
        /* Final diagonal 0.2, 0.4: score 0.3. */
        EXPECT(test_close(json_number(pair, "score_final"), 0.3, 1e-6, 1e-6), "alignment score %g",
               json_number(pair, "score_final"));
    }
    cJSON_Delete(summary);
    free(text);
    run_free(&run);
}

static void report_never_reached_is_null(void) {
    FakeRun f = default_run();
    f.val_acc_final = 0.5;
    f.pairs = 0;
    const char *dir = make_run("never", &f);
    RunData run;
    char err[1024] = "", out[1200], path[1400];
    EXPECT(run_load(dir, &run, err, sizeof err) == 0, "run_load failed: %s", err);
    snprintf(out, sizeof out, "%s/report", dir);
    EXPECT(report_run(&run, out, err, sizeof err) == 0, "report_run failed: %s", err);
    snprintf(path, sizeof path, "%s/summary.json", out);
    char *text = read_all(path);
    cJSON *summary = text ? cJSON_Parse(text) : NULL;
    EXPECT(summary != NULL, "summary.json is missing or invalid");
    EXPECT(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(summary, "val_acc_0.95_step")), "val_acc_0.95_step not null");
    const cJSON *embed =
        cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(summary, "matrices"), "embed.weight");
    const cJSON *rank = cJSON_GetObjectItemCaseSensitive(embed, "effective_rank");
    EXPECT(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(rank, "at_val_acc_0.95")), "rank at val 0.95 not null");
    cJSON_Delete(summary);
    free(text);
    run_free(&run);
}

static void report_truncated_trace(void) {
    FakeRun f = default_run();
    f.extra_rows = 2;
    f.snapshots = SNAPSHOTS - 1;
    const char *dir = make_run("cut", &f);
    RunData run;
    char err[1024] = "", out[1200];
    EXPECT(run_load(dir, &run, err, sizeof err) == 0, "run_load failed: %s", err);
    EXPECT(run.n_snapshots == SNAPSHOTS - 1, "snapshots %ld, expected steps.npy's %d", run.n_snapshots,
           SNAPSHOTS - 1);
    snprintf(out, sizeof out, "%s/report", dir);
    EXPECT(report_run(&run, out, err, sizeof err) == 0, "report_run failed: %s", err);
    run_free(&run);
}

static void report_short_file(void) {
    /* A file with fewer rows than steps.npy lowers the snapshot count (with a warning). */
    FakeRun f = default_run();
    f.short_rows = 2;
    const char *dir = make_run("short", &f);
    RunData run;
    char err[1024] = "";
    EXPECT(run_load(dir, &run, err, sizeof err) == 0, "run_load failed: %s", err);
    EXPECT(run.n_snapshots == SNAPSHOTS - 2, "snapshots %ld, expected %d", run.n_snapshots, SNAPSHOTS - 2);
    run_free(&run);
}

static void report_missing_file(void) {
    FakeRun f = default_run();
    const char *dir = make_run("missing", &f);
    char path[1200], err[1024] = "";
    snprintf(path, sizeof path, "%s/trace/blocks.0.mlp.w1.weight.vt.npy", dir);
    EXPECT(remove(path) == 0, "cannot remove %s", path);
    RunData run;
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a run with a missing trace file");
    EXPECT(strstr(err, path) != NULL, "error does not name %s: %s", path, err);
}

static void report_missing_alignment_file(void) {
    FakeRun f = default_run();
    const char *dir = make_run("missing_align", &f);
    char path[1200], err[1024] = "";
    snprintf(path, sizeof path, "%s/trace/align/0000.npy", dir);
    EXPECT(remove(path) == 0, "cannot remove %s", path);
    RunData run;
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a missing alignment file");
    EXPECT(strstr(err, path) != NULL, "error does not name %s: %s", path, err);
}

static void report_empty_run(void) {
    FakeRun f = default_run();
    f.metrics_rows = 0;
    const char *dir = make_run("empty", &f);
    char err[1024] = "";
    RunData run;
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a run without metrics rows");
    EXPECT(strstr(err, "metrics.csv") && strstr(err, "no rows"), "unexpected error: %s", err);
}

static void report_no_snapshots(void) {
    FakeRun f = default_run();
    f.snapshots = 0;
    const char *dir = make_run("no_snapshots", &f);
    char err[1024] = "";
    RunData run;
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a trace without snapshots");
    EXPECT(strstr(err, "steps.npy") && strstr(err, "no complete snapshot"), "unexpected error: %s", err);
}

static void report_not_a_run(void) {
    char dir[1024], err[1024] = "";
    snprintf(dir, sizeof dir, "%s/plain", test_tmpdir());
    make_dir(dir);
    RunData run;
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a directory without config.ini");
    EXPECT(strstr(err, dir) && strstr(err, "not a run directory"), "unexpected error: %s", err);
    snprintf(dir, sizeof dir, "%s/does_not_exist", test_tmpdir());
    EXPECT(run_load(dir, &run, err, sizeof err) != 0, "run_load accepted a missing directory");
    EXPECT(strstr(err, dir) && strstr(err, "not found"), "unexpected error: %s", err);
}

static void report_without_trace(void) {
    FakeRun f = default_run();
    f.trace_every = 0;
    const char *dir = make_run("untraced", &f);
    RunData run;
    char err[1024] = "", out[1200], path[1400];
    EXPECT(run_load(dir, &run, err, sizeof err) == 0, "run_load failed: %s", err);
    EXPECT(!run.has_trace, "has_trace set for trace.every = 0");
    snprintf(out, sizeof out, "%s/report", dir);
    EXPECT(report_run(&run, out, err, sizeof err) == 0, "report_run failed: %s", err);
    const char *files[] = {"loss.png", "error.png"};
    for (int i = 0; i < 2; i++) {
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        EXPECT(is_png(path), "%s missing", path);
    }
    snprintf(path, sizeof path, "%s/summary.json", out);
    EXPECT(test_exists(path), "summary.json missing");
    snprintf(path, sizeof path, "%s/effective_rank.png", out);
    EXPECT(!test_exists(path), "effective rank figure drawn without a trace");
    run_free(&run);
}

static void report_compare_runs(void) {
    FakeRun f = default_run();
    RunData runs[2];
    char err[1024] = "", out[1200], path[1400];
    const char *dir = make_run("cmp_a", &f);
    EXPECT(run_load(dir, &runs[0], err, sizeof err) == 0, "run_load failed: %s", err);
    f.val_acc_final = 0.6;
    dir = make_run("cmp_b", &f);
    EXPECT(run_load(dir, &runs[1], err, sizeof err) == 0, "run_load failed: %s", err);
    snprintf(out, sizeof out, "%s/compare/report", test_tmpdir());
    EXPECT(report_compare(runs, 2, out, err, sizeof err) == 0, "report_compare failed: %s", err);
    const char *files[] = {"compare_accuracy.png", "compare_effective_rank_embed.weight.png",
                           "compare_effective_rank_unembed.weight.png"};
    for (int i = 0; i < 3; i++) {
        snprintf(path, sizeof path, "%s/%s", out, files[i]);
        EXPECT(is_png(path), "%s missing", path);
    }
    snprintf(path, sizeof path, "%s/index.html", out);
    EXPECT(test_exists(path), "index.html missing");
    run_free(&runs[0]);
    run_free(&runs[1]);
}

static void report_short_labels(void) {
    char label[64];
    run_short_label("blocks.0.attn.wq.weight", 1, label, sizeof label);
    EXPECT(strcmp(label, "attn.wq") == 0, "single block: '%s'", label);
    run_short_label("blocks.3.attn.wq.weight", 0, label, sizeof label);
    EXPECT(strcmp(label, "b3.attn.wq") == 0, "several blocks: '%s'", label);
    run_short_label("features.3.conv.weight", 1, label, sizeof label);
    EXPECT(strcmp(label, "features.3.conv") == 0, "no block: '%s'", label);
}

const TestCase report_tests[] = {
    {"report tiny run", report_tiny_run},
    {"report never reached is null", report_never_reached_is_null},
    {"report truncated trace", report_truncated_trace},
    {"report short trace file", report_short_file},
    {"report missing trace file", report_missing_file},
    {"report missing alignment file", report_missing_alignment_file},
    {"report empty run", report_empty_run},
    {"report no snapshots", report_no_snapshots},
    {"report not a run directory", report_not_a_run},
    {"report without trace", report_without_trace},
    {"report compare runs", report_compare_runs},
    {"report short labels", report_short_labels},
    {NULL, NULL},
};
