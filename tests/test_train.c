/* End-to-end tests of ./train on the small config tests/fixtures/tiny.ini:
 * the trace agrees with the checkpointed weights, a run killed with SIGKILL
 * and resumed ends bitwise equal to an uninterrupted one, and bad input
 * gives one clear error without touching existing runs. They run the
 * ./train binary from the repository root, as `make test` does. */
#include <math.h>
#include <omp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "npy.h"
#include "rng.h"
#include "safetensors.h"
#include "test.h"
#include "trace.h"

#define TINY "tests/fixtures/tiny.ini"

static int count_lines(const char *s) {
    int n = 0;
    for (; *s; s++) n += *s == '\n';
    return n;
}

static void train_run(const char *name, const char *extra, char *out, size_t len, int *status) {
    char cmd[2048];
    snprintf(cmd, sizeof cmd, "./train %s run.out_dir=%s run.name=%s %s", TINY, test_tmpdir(), name, extra);
    *status = test_run(cmd, out, len);
}

static int files_equal(const char *a, const char *b) {
    FILE *fa = fopen(a, "rb"), *fb = fopen(b, "rb");
    int equal = fa && fb;
    while (equal) {
        int ca = fgetc(fa), cb = fgetc(fb);
        if (ca != cb) equal = 0;
        if (ca == EOF || cb == EOF) break;
    }
    if (fa) fclose(fa);
    if (fb) fclose(fb);
    return equal;
}

/* ---- trace against checkpoints ------------------------------------------- */

static void trace_matches_checkpoint(void) {
    char out[8192];
    int status;
    train_run("trace", "", out, sizeof out, &status);
    EXPECT(status == 0, "./train failed: %s", out);
    if (status != 0) return;

    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/trace/trace/steps.npy", test_tmpdir());
    NpyArray steps;
    EXPECT(npy_read(path, &steps, err, sizeof err) == 0, "%s", err);
    if (steps.data == NULL) return;
    EXPECT(steps.shape[0] == 13, "expected 13 snapshots (steps 0, 20, ..., 240), found %ld", steps.shape[0]);
    const int64_t *s = steps.data;
    long last = steps.shape[0] - 1;
    EXPECT(s[0] == 0 && s[last] == 240, "snapshot steps run from %lld to %lld", (long long)s[0], (long long)s[last]);

    snprintf(path, sizeof path, "%s/trace/checkpoints/step_%08d.safetensors", test_tmpdir(), 240);
    StFile *ck = st_read(path, err, sizeof err);
    EXPECT(ck != NULL, "%s", err);
    const char *names[] = {"embed.weight", "blocks.0.attn.wq.weight", "blocks.0.attn.wk.weight", "blocks.0.attn.wv.weight",
                           "blocks.0.attn.wo.weight", "blocks.0.mlp.w1.weight", "blocks.0.mlp.w2.weight", "unembed.weight"};
    for (int i = 0; ck && i < 8; i++) {
        const StTensorRef *w = st_find(ck, names[i]);
        EXPECT(w != NULL, "checkpoint has no %s", names[i]);
        if (!w) continue;
        int m = (int)w->shape[0], n = (int)w->shape[1], r = m < n ? m : n;
        /* The same routine with the same vector count (trace.vectors = 4) as the
         * trace: LAPACK takes another path when vectors are not requested. */
        int k = r < 4 ? r : 4;
        float *sv = malloc((size_t)r * sizeof(float));
        float *u = malloc((size_t)m * k * sizeof(float)), *vt = malloc((size_t)k * n * sizeof(float));
        EXPECT(svd_top(w->data, m, n, k, sv, u, vt, err, sizeof err) == 0, "%s", err);
        free(u);
        free(vt);
        snprintf(path, sizeof path, "%s/trace/trace/%s.sv.npy", test_tmpdir(), names[i]);
        NpyArray tr;
        if (npy_read(path, &tr, err, sizeof err) != 0) {
            EXPECT(0, "%s", err);
            free(sv);
            continue;
        }
        EXPECT(tr.ndim == 2 && tr.shape[0] == 13 && tr.shape[1] == r, "%s: trace shape [%ld, %ld]", names[i],
               tr.shape[0], tr.shape[1]);
        const float *row = (const float *)tr.data + last * r;
        for (int j = 0; j < r; j++)
            EXPECT(row[j] == sv[j], "%s: singular value %d at step 240: trace %.9g, SVD of checkpoint %.9g", names[i], j,
                   (double)row[j], (double)sv[j]);
        for (int j = 1; j < r; j++) EXPECT(row[j] <= row[j - 1], "%s: singular values not descending at %d", names[i], j);
        npy_free(&tr);
        free(sv);
    }
    st_free(ck);
    npy_free(&steps);

    snprintf(path, sizeof path, "%s/trace/metrics.csv", test_tmpdir());
    FILE *f = fopen(path, "r");
    char text[8192] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    EXPECT(count_lines(text) == 14, "metrics.csv has %d lines, expected a header and 13 rows", count_lines(text));
    const char *header = "step,epoch,lr,train_loss,train_acc,val_loss,val_acc,wall_seconds,train_loss_top,";
    EXPECT(strncmp(text, header, strlen(header)) == 0,
           "metrics.csv header: %.80s", text);
}

/* ---- kill -9 and resume ---------------------------------------------------- */

/* Start ./train in the background, SIGKILL it once metrics.csv shows step >= kill_after. */
static int start_and_kill(const char *name, long kill_after) {
    pid_t pid = fork();
    if (pid == 0) {
        char out_dir[600], run_name[300];
        snprintf(out_dir, sizeof out_dir, "run.out_dir=%s", test_tmpdir());
        snprintf(run_name, sizeof run_name, "run.name=%s", name);
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execl("./train", "./train", TINY, out_dir, run_name, (char *)NULL);
        _exit(127);
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/%s/metrics.csv", test_tmpdir(), name);
    for (int tries = 0; tries < 6000; tries++) {
        struct timespec ts = {0, 5000000};
        nanosleep(&ts, NULL);
        FILE *f = fopen(path, "r");
        long step = -1;
        if (f) {
            char line[512];
            while (fgets(line, sizeof line, f)) step = strtol(line, NULL, 10);
            fclose(f);
        }
        if (step >= kill_after) break;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return -1; /* finished before the kill */
    }
    kill(pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? 0 : -1;
}

static void resume_after_kill_is_bitwise(void) {
    char out[8192];
    int status;
    train_run("straight", "", out, sizeof out, &status);
    EXPECT(status == 0, "uninterrupted run failed: %s", out);

    EXPECT(start_and_kill("killed", 100) == 0, "the run to kill ended before SIGKILL reached it");
    char cmd[1024];
    snprintf(cmd, sizeof cmd, "./train --resume %s/killed", test_tmpdir());
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "resume failed: %s", out);
    EXPECT(strstr(out, "resuming") != NULL, "resume did not report where it started: %s", out);

    const char *files[] = {"checkpoints/step_00000240.safetensors", "trace/steps.npy",
                           "trace/blocks.0.mlp.w1.weight.sv.npy", "trace/blocks.0.attn.wq.weight.u.npy",
                           "trace/embed.weight.vt.npy"};
    for (int i = 0; i < 5; i++) {
        char a[1024], b[1024];
        snprintf(a, sizeof a, "%s/straight/%s", test_tmpdir(), files[i]);
        snprintf(b, sizeof b, "%s/killed/%s", test_tmpdir(), files[i]);
        if (i == 0) {
            /* Checkpoints differ in their wall_seconds metadata, so compare tensors. */
            char detail[512] = "";
            EXPECT(test_same_tensors(a, b, detail, sizeof detail), "final checkpoints after resume: %s", detail);
        } else {
            EXPECT(files_equal(a, b), "%s differs between the uninterrupted and the resumed run", files[i]);
        }
    }
    char a[1024], b[1024];
    /* Every column but wall_seconds (8) must agree, the low-rank ones included. */
    snprintf(a, sizeof a, "cut -d, -f1-7,9- %s/straight/metrics.csv > %s/m1 && cut -d, -f1-7,9- %s/killed/metrics.csv > %s/m2",
             test_tmpdir(), test_tmpdir(), test_tmpdir(), test_tmpdir());
    EXPECT(test_run(a, out, sizeof out) == 0, "cut failed: %s", out);
    snprintf(a, sizeof a, "%s/m1", test_tmpdir());
    snprintf(b, sizeof b, "%s/m2", test_tmpdir());
    EXPECT(files_equal(a, b), "metrics.csv (without wall time) differs after resume");
    for (int i = 0; i < 11; i++) {
        /* The alignment of every consecutive layer pair, per snapshot. */
        snprintf(a, sizeof a, "%s/straight/trace/align/%04d.npy", test_tmpdir(), i);
        snprintf(b, sizeof b, "%s/killed/trace/align/%04d.npy", test_tmpdir(), i);
        EXPECT(files_equal(a, b), "trace/align/%04d.npy differs after resume", i);
    }

    /* Resuming a finished run does nothing and succeeds. */
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0 && strstr(out, "already complete"), "resume of a finished run: status %d, %s", status, out);
}

/* ---- bad input --------------------------------------------------------------- */

typedef struct {
    const char *args;       /* appended to ./train */
    const char *expected;   /* substring of the error line */
} BadInput;

static void bad_input_rejected(void) {
    char bad_ini[1024], cmdbuf[2048], out[8192];
    snprintf(bad_ini, sizeof bad_ini, "%s/bad.ini", test_tmpdir());
    FILE *f = fopen(bad_ini, "w");
    fputs("[optim]\nlearning_rate = 0.1\n", f);
    fclose(f);
    char unknown_section[2048];
    snprintf(unknown_section, sizeof unknown_section, "%s/section.ini", test_tmpdir());
    f = fopen(unknown_section, "w");
    fputs("[optimiser]\nlr = 0.1\n", f);
    fclose(f);
    char file_as_dir[1024];
    snprintf(file_as_dir, sizeof file_as_dir, "%s/plainfile", test_tmpdir());
    f = fopen(file_as_dir, "w");
    fclose(f);

    char a1[1200], a2[2100], a3[1200];
    snprintf(a1, sizeof a1, "%s", bad_ini);
    snprintf(a2, sizeof a2, "%s", unknown_section);
    snprintf(a3, sizeof a3, TINY " run.out_dir=%s/sub", file_as_dir);
    BadInput cases[] = {
        {"/nonexistent/config.ini", "cannot read config '/nonexistent/config.ini'"},
        {a1, "bad.ini:2: unknown key 'learning_rate' in [optim] (did you mean 'lr'?)"},
        {a2, "section.ini:1: unknown section [optimiser]"},
        {TINY " task.p=2", "override 'task.p=2': must be in [3, 1000]"},
        {TINY " task.p=abc", "not an integer"},
        {TINY " task.train_frac=1.0", "train_frac"},
        {TINY " task.train_frac=0", "train_frac"},
        {TINY " optim.lr=-0.1", "lr"},
        {TINY " optim.weight_decay=-1", "weight_decay"},
        {TINY " train.batch_size=0", "batch_size"},
        {TINY " optim.lr", "section.key=value"},
        {a3, "cannot create directory"},
        {"--resume /nonexistent/run", "run directory '/nonexistent/run' not found"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        snprintf(cmdbuf, sizeof cmdbuf, "./train %s run.out_dir=%s run.name=bad%zu", cases[i].args, test_tmpdir(), i);
        if (strncmp(cases[i].args, "--resume", 8) == 0) snprintf(cmdbuf, sizeof cmdbuf, "./train %s", cases[i].args);
        if (cases[i].args == a3) snprintf(cmdbuf, sizeof cmdbuf, "./train %s run.name=bad%zu", cases[i].args, i);
        int status = test_run(cmdbuf, out, sizeof out);
        EXPECT(status != 0, "'%s' exited with 0", cmdbuf);
        EXPECT(strstr(out, cases[i].expected) != NULL, "'%s': expected '%s' in: %s", cmdbuf, cases[i].expected, out);
        EXPECT(count_lines(out) == 1 && strncmp(out, "specdyn: error: ", 16) == 0, "'%s': not one error line: %s",
               cmdbuf, out);
        char dir[1200];
        snprintf(dir, sizeof dir, "%s/bad%zu", test_tmpdir(), i);
        struct stat st;
        EXPECT(stat(dir, &st) != 0, "'%s' created a run directory", cmdbuf);
    }
}

static void existing_run_not_overwritten(void) {
    char out[8192], dir[1024], marker[1100];
    snprintf(dir, sizeof dir, "%s/existing", test_tmpdir());
    mkdir(dir, 0777);
    snprintf(marker, sizeof marker, "%s/config.ini", dir);
    FILE *f = fopen(marker, "w");
    fputs("; precious\n", f);
    fclose(f);
    int status;
    train_run("existing", "", out, sizeof out, &status);
    EXPECT(status != 0, "training into an existing run directory succeeded");
    EXPECT(strstr(out, "already exists") && strstr(out, "--resume"), "message: %s", out);
    f = fopen(marker, "r");
    char text[64] = "";
    EXPECT(f && fgets(text, sizeof text, f) && strcmp(text, "; precious\n") == 0, "existing config.ini was changed");
    if (f) fclose(f);
}

static void nan_loss_stops_run(void) {
    char out[8192];
    int status;
    /* A learning rate of 1e30 sends the weights to about 1e27 after one step,
     * so the logits and then the loss overflow. */
    train_run("diverge", "optim.lr=1e30 schedule.name=constant", out, sizeof out, &status);
    EXPECT(status != 0, "a diverging run exited with 0: %s", out);
    EXPECT(strstr(out, "at step") != NULL && (strstr(out, "NaN") || strstr(out, "infinite") || strstr(out, "not finite")),
           "message does not name the non-finite value and step: %s", out);
    char path[1024];
    snprintf(path, sizeof path, "%s/diverge/checkpoints/step_00000000.safetensors", test_tmpdir());
    char err[256];
    StFile *ck = st_read(path, err, sizeof err);
    EXPECT(ck != NULL, "the last good checkpoint is gone: %s", err);
    st_free(ck);
}

/* ---- low-rank projection ---------------------------------------------------- */

static void lowrank_projection_reconstructs(void) {
    ParamStore *ps = calloc(1, sizeof *ps);
    Tensor *w = params_add(ps, "layers.0.weight", ROLE_WEIGHT, 2, (int[]){6, 9});
    Tensor *out = params_add(ps, "layers.1.weight", ROLE_OUTPUT, 2, (int[]){3, 6});
    Rng rng;
    rng_seed(&rng, 4, 4);
    for (long i = 0; i < w->size; i++) w->data[i] = rng_uniform(&rng) - 0.5f;
    for (long i = 0; i < out->size; i++) out->data[i] = rng_uniform(&rng) - 0.5f;
    float original[54], top[54], output_before[18];
    memcpy(original, w->data, sizeof original);
    memcpy(output_before, out->data, sizeof output_before);
    char dir[1024], err[512];
    snprintf(dir, sizeof dir, "%s/projection", test_tmpdir());
    mkdir(dir, 0777);
    Tracer *t = tracer_open(dir, ps, "*", 2, 0, 0, err, sizeof err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    EXPECT(tracer_snapshot(t, 0, err, sizeof err) == 0, "%s", err);

    tracer_project(t, 1.0, 1);
    for (int i = 0; i < 54; i++)
        EXPECT(test_close(w->data[i], original[i], 1e-4, 1e-5), "full-rank reconstruction [%d]: %g vs %g", i,
               (double)w->data[i], (double)original[i]);
    EXPECT(memcmp(out->data, output_before, sizeof output_before) == 0, "the output layer was projected");
    tracer_restore(t);

    tracer_project(t, 0.5, 1);
    memcpy(top, w->data, sizeof top);
    tracer_restore(t);
    tracer_project(t, 0.5, 0);
    for (int i = 0; i < 54; i++)
        EXPECT(test_close(top[i] + w->data[i], original[i], 1e-4, 1e-5), "top + bottom halves [%d]: %g vs %g", i,
               (double)(top[i] + w->data[i]), (double)original[i]);
    tracer_restore(t);
    EXPECT(memcmp(w->data, original, sizeof original) == 0, "restore did not bring back the exact weights");

    /* The top half has rank 3: its fourth singular value is zero. */
    memcpy(w->data, top, sizeof top);
    float s[6];
    EXPECT(svd_top(w->data, 6, 9, 0, s, NULL, NULL, err, sizeof err) == 0, "%s", err);
    EXPECT(s[2] > 1e-3f && s[3] < 1e-5f, "top-half singular values %g %g", (double)s[2], (double)s[3]);
    tracer_close(t);
    params_free(ps);
    free(ps);
}

/* The snapshot's SVDs of small matrices run serially on whichever thread
 * takes them, so 1 and 2 threads write byte-identical trace files. */
static void snapshot_same_across_threads(void) {
    char dirs[2][1024], err[512], out[4096];
    int shapes[4][2] = {{6, 9}, {64, 200}, {128, 96}, {3, 64}};
    for (int run = 0; run < 2; run++) {
        ParamStore *ps = calloc(1, sizeof *ps);
        Rng rng;
        rng_seed(&rng, 8, 4);
        for (int i = 0; i < 4; i++) {
            char name[32];
            snprintf(name, sizeof name, "layers.%d.weight", i);
            Tensor *w = params_add(ps, name, i == 3 ? ROLE_OUTPUT : ROLE_WEIGHT, 2, shapes[i]);
            for (long j = 0; j < w->size; j++) w->data[j] = rng_uniform(&rng) - 0.5f;
        }
        snprintf(dirs[run], sizeof dirs[run], "%s/snapshot-threads-%d", test_tmpdir(), run + 1);
        mkdir(dirs[run], 0777);
        int threads = omp_get_max_threads();
        omp_set_num_threads(run + 1);
        Tracer *t = tracer_open(dirs[run], ps, "*", 4, 0, 0, err, sizeof err);
        EXPECT(t != NULL, "%s", err);
        if (t) {
            EXPECT(tracer_snapshot(t, 0, err, sizeof err) == 0, "%s", err);
            tracer_close(t);
        }
        omp_set_num_threads(threads);
        char path[2100];
        snprintf(path, sizeof path, "%s/trace/layers.1.weight.u.npy", dirs[run]);
        EXPECT(test_exists(path), "the snapshot wrote no %s", path);
        params_free(ps);
        free(ps);
    }
    char cmd[2200];
    snprintf(cmd, sizeof cmd, "diff -r %s %s", dirs[0], dirs[1]);
    EXPECT(test_run(cmd, out, sizeof out) == 0, "trace files differ between 1 and 2 threads: %s", out);
}

/* A kill between the step-0 checkpoint and the next one resumes from step 0,
 * which redoes step 0's metrics row and snapshot (with the low-rank
 * evaluation, which needs that snapshot's SVD). */
/* The trace hook (SVDs, alignment, the low-rank evaluation) only reads the
 * weights: a run with it ends with the same tensors as a run without it. */
static void trace_leaves_training_unchanged(void) {
    char out[8192];
    int status;
    train_run("trace-on", "train.steps=120", out, sizeof out, &status);
    EXPECT(status == 0, "traced run failed: %s", out);
    train_run("trace-off", "train.steps=120 trace.every=0 trace.prune=0", out, sizeof out, &status);
    EXPECT(status == 0, "untraced run failed: %s", out);
    char a[1024], b[1024], detail[512] = "";
    snprintf(a, sizeof a, "%s/trace-on/checkpoints/step_00000120.safetensors", test_tmpdir());
    snprintf(b, sizeof b, "%s/trace-off/checkpoints/step_00000120.safetensors", test_tmpdir());
    EXPECT(test_same_tensors(a, b, detail, sizeof detail), "tracing changed training: %s", detail);
}

static void resume_from_step_zero(void) {
    char out[8192], cmd[1024], path[1024];
    int status;
    train_run("zero", "train.steps=40 train.checkpoint_every=1000", out, sizeof out, &status);
    EXPECT(status == 0, "run failed: %s", out);
    snprintf(path, sizeof path, "%s/zero/checkpoints/step_00000040.safetensors", test_tmpdir());
    EXPECT(remove(path) == 0, "cannot remove %s", path);
    snprintf(cmd, sizeof cmd, "./train --resume %s/zero", test_tmpdir());
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "resume from step 0 failed: %s", out);
    snprintf(path, sizeof path, "%s/zero/metrics.csv", test_tmpdir());
    FILE *f = fopen(path, "r");
    char text[8192] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    EXPECT(count_lines(text) == 4, "metrics.csv has %d lines, expected a header and rows 0, 20, 40", count_lines(text));
    snprintf(path, sizeof path, "%s/zero/trace/steps.npy", test_tmpdir());
    NpyArray steps;
    char err[256];
    EXPECT(npy_read(path, &steps, err, sizeof err) == 0, "%s", err);
    EXPECT(steps.shape[0] == 3, "steps.npy has %ld snapshots, expected 3", steps.shape[0]);
    npy_free(&steps);
}

const TestCase train_tests[] = {
    {"lowrank projection reconstructs", lowrank_projection_reconstructs},
    {"snapshot same across threads", snapshot_same_across_threads},
    {"train trace matches checkpoint", trace_matches_checkpoint},
    {"train resume after kill is bitwise", resume_after_kill_is_bitwise},
    {"train resume from step zero", resume_from_step_zero},
    {"train trace leaves training unchanged", trace_leaves_training_unchanged},
    {"train bad input rejected", bad_input_rejected},
    {"train existing run not overwritten", existing_run_not_overwritten},
    {"train NaN loss stops run", nan_loss_stops_run},
    {NULL, NULL},
};
