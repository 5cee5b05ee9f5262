/* ./train CONFIG.ini [section.key=value ...]
 * ./train --resume RUN_DIR [train.steps=N]
 *
 * Trains one model, records its spectral trace, writes metrics and
 * checkpoints into RUN_DIR = out_dir/name, and resumes a stopped run from its
 * newest checkpoint so that the result is bitwise identical to an
 * uninterrupted run with the same thread count. */
#include <cblas.h>
#include <errno.h>
#include <ftw.h>
#include <libgen.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "checkpoint.h"
#include "config.h"
#include "error.h"
#include "ops.h"
#include "optim.h"
#include "rng.h"
#include "task.h"
#include "trace.h"

/* OpenBLAS's own thread control (not in cblas.h of every distribution). */
void openblas_set_num_threads(int num_threads);

#define ERR_LEN 1024

static void usage(FILE *out) {
    fputs("usage: train CONFIG.ini [section.key=value ...]\n"
          "       train --resume RUN_DIR [train.steps=N]\n"
          "       train --bench N CONFIG.ini [section.key=value ...]\n"
          "Trains the model CONFIG describes and writes RUN_DIR = run.out_dir/run.name:\n"
          "config.ini, metrics.csv, checkpoints/ and trace/. --resume continues a stopped\n"
          "run from its newest checkpoint; train.steps=N extends its step budget.\n"
          "--bench times N training steps after max(3, N/10) warm-up steps, with the\n"
          "trace at its configured cadence (trace.every=0 turns it off), in a temporary\n"
          "directory that is removed afterwards; it prints one JSON line and writes no run.\n",
          out);
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- metrics.csv ---------------------------------------------------------- */

static const char *METRICS_HEADER = "step,epoch,lr,train_loss,train_acc,val_loss,val_acc,wall_seconds";
/* Appended when trace.prune > 0: the low-rank evaluation, filled on snapshot rows. */
static const char *LOWRANK_HEADER = ",train_loss_top,train_acc_top,val_loss_top,val_acc_top,"
                                    "train_loss_bottom,train_acc_bottom,val_loss_bottom,val_acc_bottom";

/* Rewrite metrics.csv keeping the header and the rows with step <= keep_step
 * (rows after the checkpoint being resumed are recomputed). */
static void truncate_metrics(const char *path, long keep_step, int lowrank) {
    FILE *in = fopen(path, "r");
    char tmp[1200];
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    FILE *out = sd_fopen(tmp, "w");
    fprintf(out, "%s%s\n", METRICS_HEADER, lowrank ? LOWRANK_HEADER : "");
    if (in) {
        char line[4096];
        int first = 1;
        while (fgets(line, sizeof line, in)) {
            if (first) {
                first = 0;
                continue;
            }
            char *end;
            long step = strtol(line, &end, 10);
            if (end == line || *end != ',' || line[strlen(line) - 1] != '\n') continue; /* a torn last line */
            if (step <= keep_step) fputs(line, out);
        }
        fclose(in);
    }
    sd_fclose(out, tmp);
    if (rename(tmp, path) != 0) sd_fail("cannot replace '%s': %s", path, strerror(errno));
}

/* ---- training state ------------------------------------------------------- */

typedef struct {
    Config cfg;
    char run_dir[1024];
    ParamStore *ps;
    Task *task;
    Optimizer opt;
    Schedule sched;
    Graph graph;
    Tracer *tracer;
    FILE *metrics;
    long step;
    double wall_offset;        /* wall seconds of earlier sessions of this run */
    double start;
    /* data order */
    long *batch_idx;           /* [batch_count] examples of the current step */
    int *epoch_perm[2];        /* [n_train] permutations of two epochs */
    long perm_epoch[2];        /* the epochs they belong to, -1 for none */
    /* running training metrics since the last evaluation */
    double loss_sum;
    long correct_sum, seen_sum, loss_count;
    /* first steps at which accuracy thresholds were met, for the summary */
    long train_full_step, val_95_step;
    int tty;
    /* wall seconds outside training steps in this session, for the profile */
    double seconds_trace, seconds_eval, seconds_checkpoint;
} Trainer;

static void optimizer_from_config(const Config *c, Optimizer *o) {
    memset(o, 0, sizeof *o);
    o->kind = strcmp(c->optimizer, "sgd") == 0 ? OPTIM_SGD : strcmp(c->optimizer, "adam") == 0 ? OPTIM_ADAM : OPTIM_ADAMW;
    o->beta1 = c->beta1;
    o->beta2 = c->beta2;
    o->eps = c->eps;
    o->weight_decay = c->weight_decay;
    o->momentum = c->momentum;
    o->nesterov = c->nesterov;
    o->decay_matrices_only = strcmp(c->decay, "matrices") == 0;
}

static void schedule_from_config(const Config *c, Schedule *s) {
    memset(s, 0, sizeof *s);
    static const char *const names[] = {"constant", "warmup", "multistep", "cosine", "warmup_cosine"};
    for (int i = 0; i < 5; i++)
        if (strcmp(c->schedule, names[i]) == 0) s->kind = (ScheduleKind)i;
    s->total_steps = c->steps;
    s->warmup = c->warmup;
    s->milestones = c->milestones;
    s->n_milestones = c->n_milestones;
    s->gamma = c->gamma;
    s->min_factor = c->min_factor;
}

/* Examples per optimiser step: train.batch_size, or the whole training set. */
static long batch_count(const Trainer *tr) {
    return tr->cfg.batch_size >= tr->task->n_train ? tr->task->n_train : tr->cfg.batch_size;
}

/* Permutation of the training set for epoch e: a shuffle seeded by (seed,
 * e), so any step's batch can be rebuilt after a resume without saved state.
 * Two epochs are cached because a batch may straddle an epoch boundary. */
static const int *epoch_order(Trainer *tr, long epoch) {
    int slot = (int)(epoch & 1);
    if (tr->perm_epoch[slot] != epoch) {
        long n = tr->task->n_train;
        int *perm = tr->epoch_perm[slot];
        for (long i = 0; i < n; i++) perm[i] = (int)i;
        Rng g;
        rng_seed(&g, (uint64_t)tr->cfg.seed, RNG_STREAM_EPOCH + (uint64_t)epoch);
        rng_shuffle(&g, perm, n);
        tr->perm_epoch[slot] = epoch;
    }
    return tr->epoch_perm[slot];
}

/* Fill tr->batch_idx with the batch_count(tr) examples of the given step.
 * Full batch: every training example in order. Otherwise step s takes
 * positions s·B .. (s+1)·B − 1 of the concatenated epoch permutations, so
 * every epoch visits each example exactly once. */
static void select_batch(Trainer *tr, long step) {
    long n_train = tr->task->n_train, batch = batch_count(tr);
    if (batch == n_train) {
        for (long i = 0; i < n_train; i++) tr->batch_idx[i] = i;
        return;
    }
    for (long i = 0; i < batch; i++) {
        long pos = step * batch + i;
        tr->batch_idx[i] = epoch_order(tr, pos / n_train)[pos % n_train];
    }
}

/* Loss and accuracy over a whole split, without recording. */
static void evaluate(Trainer *tr, Split split, double *loss, double *acc) {
    long n = split == SPLIT_TRAIN ? tr->task->n_train : tr->task->n_val;
    long chunk = tr->task->eval_batch;
    long *idx = sd_malloc((size_t)chunk * sizeof *idx);
    double total = 0.0;
    long correct = 0;
    /* Evaluation mode: no tape, running BatchNorm statistics, no dropout. */
    tr->graph.recording = 0;
    tr->graph.training = 0;
    for (long start = 0; start < n; start += chunk) {
        long count = n - start < chunk ? n - start : chunk;
        for (long i = 0; i < count; i++) idx[i] = start + i;
        graph_reset(&tr->graph);
        Tensor *l = tr->task->forward(tr->task, &tr->graph, split, idx, count, &correct);
        total += (double)l->data[0] * (double)count;
    }
    graph_reset(&tr->graph);
    tr->graph.recording = 1;
    tr->graph.training = 1;
    free(idx);
    *loss = total / (double)n;
    *acc = (double)correct / (double)n;
}

/* Batches of training examples over which the low-rank evaluation
 * recomputes batch-norm statistics after editing the weights. */
#define BN_RECOMPUTE_BATCHES 20

/* After a weight edit, set every batch-norm running statistic to its average
 * over BN_RECOMPUTE_BATCHES micro-batches of training examples in
 * training-mode forward passes, so that evaluation normalises with the edited
 * network's own statistics. The examples are a seeded random sample (a
 * dataset may be stored class by class) drawn from a stream of their own, so
 * training's draws are untouched. The caller keeps the old values. */
static void recompute_bn_stats(Trainer *tr) {
    long n = tr->task->n_train;
    long batch = batch_count(tr) / tr->cfg.accumulate;
    if (batch > n) batch = n;
    long total = BN_RECOMPUTE_BATCHES * batch < n ? BN_RECOMPUTE_BATCHES * batch : n;
    long *order = sd_malloc((size_t)n * sizeof *order);
    for (long i = 0; i < n; i++) order[i] = i;
    Rng rng;
    rng_seed(&rng, (uint64_t)tr->cfg.seed, RNG_STREAM_BN_SAMPLE);
    for (long i = 0; i < total; i++) { /* the first total entries of a Fisher-Yates shuffle */
        long j = i + (long)rng_below(&rng, (uint64_t)(n - i));
        long t = order[i];
        order[i] = order[j];
        order[j] = t;
    }
    tr->graph.recording = 0;
    tr->graph.training = 1;
    for (long b = 0; b * batch < total; b++) {
        long count = total - b * batch < batch ? total - b * batch : batch;
        /* Augmentation draws from a stream of its own, so the statistics do not depend on training's draws. */
        rng_seed(&tr->graph.rng, (uint64_t)tr->cfg.seed, RNG_STREAM_BN_SAMPLE + 1 + (uint64_t)b);
        tr->graph.bn_average_count = b + 1;
        graph_reset(&tr->graph);
        long correct = 0;
        tr->task->forward(tr->task, &tr->graph, SPLIT_TRAIN, order + b * batch, count, &correct);
    }
    tr->graph.bn_average_count = 0;
    graph_reset(&tr->graph);
    tr->graph.recording = 1;
    free(order);
}

/* Copy every buffer (batch-norm running statistics) into or out of saved. */
static long copy_buffers(ParamStore *ps, float *saved, int restore) {
    long offset = 0;
    for (int i = 0; i < ps->count; i++) {
        Param *p = &ps->params[i];
        if (p->trainable) continue;
        if (saved) {
            float *a = restore ? p->t.data : saved + offset, *b = restore ? saved + offset : p->t.data;
            memcpy(a, b, (size_t)p->t.size * sizeof(float));
        }
        offset += p->t.size;
    }
    return offset;
}

static double wall_now(const Trainer *tr) { return tr->wall_offset + now_seconds() - tr->start; }

static void write_checkpoint(Trainer *tr) {
    char err[ERR_LEN];
    for (int i = 0; i < tr->ps->count; i++) {
        const Tensor *t = &tr->ps->params[i].t;
        for (long j = 0; j < t->size; j++)
            if (!isfinite(t->data[j]))
                sd_fail("parameter '%s' is not finite after step %ld; stopping without overwriting the last good "
                        "checkpoint in %s/checkpoints",
                        tr->ps->params[i].name, tr->step, tr->run_dir);
    }
    if (checkpoint_save(tr->run_dir, tr->step, wall_now(tr), tr->ps, &tr->opt, tr->cfg.keep_checkpoints, err,
                        sizeof err) != 0)
        sd_fail("%s", err);
}

static void take_snapshot(Trainer *tr) {
    char err[ERR_LEN];
    if (tr->tracer && tracer_last_step(tr->tracer) < tr->step && tracer_snapshot(tr->tracer, tr->step, err, sizeof err) != 0)
        sd_fail("trace at step %ld: %s", tr->step, err);
}

static void format_eta(double seconds, char *buf, size_t len) {
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

static void progress(Trainer *tr, double loss, double train_acc, double val_acc, double rate, int final) {
    char eta[32];
    format_eta(rate > 0 ? (double)(tr->cfg.steps - tr->step) / rate : 0.0, eta, sizeof eta);
    fprintf(stderr, "%sstep %ld/%ld  loss %.4f  train_acc %.4f  val_acc %.4f  %.1f steps/s  ETA %s%s",
            tr->tty ? "\r\033[K" : "", tr->step, tr->cfg.steps, loss, train_acc, val_acc, rate, eta,
            tr->tty && !final ? "" : "\n");
    fflush(stderr);
}

static void evaluate_and_log(Trainer *tr, double lr, double *val_acc_out, double *train_acc_out, double *loss_out) {
    double val_loss, val_acc, train_loss, train_acc;
    evaluate(tr, SPLIT_VAL, &val_loss, &val_acc);
    if (tr->loss_count) {
        /* Mean over the steps since the last row, measured before each update. */
        train_loss = tr->loss_sum / (double)tr->loss_count;
        train_acc = (double)tr->correct_sum / (double)tr->seen_sum;
    } else {
        evaluate(tr, SPLIT_TRAIN, &train_loss, &train_acc); /* step 0: no batches yet */
    }
    double epoch = (double)tr->step * (double)batch_count(tr) / (double)tr->task->n_train;
    fprintf(tr->metrics, "%ld,%.6g,%.9g,%.9g,%.6f,%.9g,%.6f,%.3f", tr->step, epoch, lr, train_loss, train_acc, val_loss,
            val_acc, wall_now(tr));
    if (tr->cfg.trace_prune > 0) {
        if (tr->tracer && tracer_last_step(tr->tracer) == tr->step) {
            long n_buffer = copy_buffers(tr->ps, NULL, 0);
            float *buffers = n_buffer > 0 ? sd_malloc((size_t)n_buffer * sizeof(float)) : NULL;
            copy_buffers(tr->ps, buffers, 0);
            for (int top = 1; top >= 0; top--) {
                double values[4];
                tracer_project(tr->tracer, tr->cfg.trace_prune, top);
                if (buffers) recompute_bn_stats(tr);
                evaluate(tr, SPLIT_TRAIN, &values[0], &values[1]);
                evaluate(tr, SPLIT_VAL, &values[2], &values[3]);
                tracer_restore(tr->tracer);
                copy_buffers(tr->ps, buffers, 1);
                fprintf(tr->metrics, ",%.9g,%.6f,%.9g,%.6f", values[0], values[1], values[2], values[3]);
            }
            free(buffers);
        } else {
            fputs(",,,,,,,,", tr->metrics);
        }
    }
    fputc('\n', tr->metrics);
    if (fflush(tr->metrics) != 0 || ferror(tr->metrics))
        sd_fail("writing %s/metrics.csv failed at step %ld: %s", tr->run_dir, tr->step, strerror(errno));
    if (tr->train_full_step < 0 && train_acc >= 1.0) tr->train_full_step = tr->step;
    if (tr->val_95_step < 0 && val_acc >= 0.95) tr->val_95_step = tr->step;
    tr->loss_sum = 0.0;
    tr->loss_count = tr->correct_sum = tr->seen_sum = 0;
    *val_acc_out = val_acc;
    *train_acc_out = train_acc;
    *loss_out = train_loss;
}

/* One optimiser step: the step's batch is split into train.accumulate
 * contiguous micro-batches whose losses are weighted by their share of the
 * batch, so the gradient is that of the mean loss over the whole batch. */
static void train_step(Trainer *tr, double lr) {
    params_zero_grad(tr->ps);
    long batch = batch_count(tr);
    int micros = tr->cfg.accumulate;
    select_batch(tr, tr->step);
    for (int micro = 0; micro < micros; micro++) {
        long start = batch * micro / micros, end = batch * (micro + 1) / micros;
        graph_reset(&tr->graph);
        /* Dropout and augmentation draw from a stream of their own per
         * micro-batch, so a resumed run replays them exactly. */
        rng_seed(&tr->graph.rng, (uint64_t)tr->cfg.seed, RNG_STREAM_STEP + (uint64_t)(tr->step * micros + micro));
        long correct = 0;
        Tensor *loss = tr->task->forward(tr->task, &tr->graph, SPLIT_TRAIN, tr->batch_idx + start, end - start, &correct);
        float value = loss->data[0];
        if (!isfinite(value))
            sd_fail("training loss is %s at step %ld; stopping. The last good checkpoint is kept in %s/checkpoints",
                    isnan(value) ? "NaN" : "infinite", tr->step + 1, tr->run_dir);
        if (micros > 1) loss = op_scale(&tr->graph, loss, (float)(end - start) / (float)batch);
        graph_backward(&tr->graph, loss);
        tr->loss_sum += (double)value * (double)(end - start) / (double)batch;
        tr->correct_sum += correct;
        tr->seen_sum += end - start;
    }
    tr->loss_count++;
    graph_reset(&tr->graph);
    if (tr->cfg.clip > 0.0) clip_grad_norm(tr->ps, tr->cfg.clip);
    optim_step(&tr->opt, tr->ps, lr);
    tr->step++;
}

static void load_config(Config *cfg, const char *path, int argc, char **argv, int first_override, int resume) {
    char err[ERR_LEN];
    memset(cfg, 0, sizeof *cfg);
    config_defaults(cfg);
    if (config_load(cfg, path, err, sizeof err) != 0) sd_fail("%s", err);
    for (int i = first_override; i < argc; i++) {
        if (resume && strncmp(argv[i], "train.steps=", 12) != 0)
            sd_fail("override '%s' is not allowed with --resume: a resumed run keeps its configuration (only "
                    "train.steps=N may extend it)",
                    argv[i]);
        if (config_override(cfg, argv[i], err, sizeof err) != 0) sd_fail("%s", err);
    }
    if (config_validate(cfg, err, sizeof err) != 0) sd_fail("%s: %s", path, err);
}

static int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

/* ./train --bench: time steps of the configured model in a scratch run
 * directory. Evaluation and checkpoints are left out; the trace runs at its
 * cadence, counted from the first timed step, so that N = a multiple of
 * trace.every includes N / trace.every snapshots. */
static int bench(Trainer *tr, long n_steps) {
    char err[ERR_LEN];
    char scratch[] = "/tmp/specdyn-bench-XXXXXX";
    if (!mkdtemp(scratch)) sd_fail("cannot create a temporary directory: %s", strerror(errno));
    snprintf(tr->run_dir, sizeof tr->run_dir, "%s", scratch);
    long warmup = n_steps / 10 > 3 ? n_steps / 10 : 3;
    if (tr->cfg.trace_every > 0) {
        tr->tracer = tracer_open(tr->run_dir, tr->ps, tr->cfg.trace_layers, tr->cfg.trace_vectors, 0, 0, err, sizeof err);
        if (!tr->tracer || tracer_set_pairs(tr->tracer, tr->task->pairs, tr->task->n_pairs, 0, 0, err, sizeof err) != 0)
            sd_fail("%s", err);
    }
    for (long i = 0; i < warmup; i++) train_step(tr, tr->cfg.lr);
    /* One snapshot outside the timing: its first call creates the trace files. */
    take_snapshot(tr);

    double t0 = now_seconds();
    for (long i = 1; i <= n_steps; i++) {
        train_step(tr, tr->cfg.lr);
        if (tr->cfg.trace_every > 0 && i % tr->cfg.trace_every == 0) take_snapshot(tr);
    }
    double seconds = now_seconds() - t0;

    tracer_close(tr->tracer);
    tr->tracer = NULL;
    nftw(scratch, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
    graph_profile_report(stderr);
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    printf("{\"steps\": %ld, \"warmup\": %ld, \"seconds\": %.6f, \"steps_per_second\": %.4f, "
           "\"threads\": %d, \"trace_every\": %ld, \"peak_rss_mb\": %.1f, \"loss\": %.6g}\n",
           n_steps, warmup, seconds, (double)n_steps / seconds, tr->cfg.threads, (long)tr->cfg.trace_every,
           (double)usage.ru_maxrss / 1024.0, tr->loss_sum / (double)(tr->loss_count > 0 ? tr->loss_count : 1));
    return 0;
}

int main(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    Trainer tr_storage, *tr = &tr_storage;
    memset(tr, 0, sizeof *tr);
    char err[ERR_LEN];
    int resume = strcmp(argv[1], "--resume") == 0;
    long bench_steps = 0;
    if (strcmp(argv[1], "--bench") == 0) {
        char *end = NULL;
        if (argc >= 3) bench_steps = strtol(argv[2], &end, 10);
        if (argc < 4 || end == argv[2] || *end != '\0' || bench_steps < 1) {
            fprintf(stderr, "specdyn: error: --bench needs a step count of at least 1 and a config file\n");
            usage(stderr);
            return 2;
        }
        load_config(&tr->cfg, argv[3], argc, argv, 4, 0);
    } else if (resume) {
        if (argc < 3) {
            usage(stderr);
            return 2;
        }
        snprintf(tr->run_dir, sizeof tr->run_dir, "%s", argv[2]);
        size_t len = strlen(tr->run_dir);
        while (len > 1 && tr->run_dir[len - 1] == '/') tr->run_dir[--len] = '\0';
        char cfg_path[1100];
        snprintf(cfg_path, sizeof cfg_path, "%s/config.ini", tr->run_dir);
        if (!path_exists(tr->run_dir)) sd_fail("run directory '%s' not found", tr->run_dir);
        if (!path_exists(cfg_path)) sd_fail("'%s' is not a run directory: it has no config.ini", tr->run_dir);
        Config recorded;
        load_config(&recorded, cfg_path, argc, argv, argc, 1);
        load_config(&tr->cfg, cfg_path, argc, argv, 3, 1);
        if (tr->cfg.steps < recorded.steps)
            sd_fail("train.steps=%ld is below the run's %ld steps; --resume can only extend a run", tr->cfg.steps,
                    recorded.steps);
    } else {
        if (argv[1][0] == '-') {
            fprintf(stderr, "specdyn: error: unknown option '%s'\n", argv[1]);
            usage(stderr);
            return 2;
        }
        load_config(&tr->cfg, argv[1], argc, argv, 2, 0);
        if (tr->cfg.run_name[0] == '\0') {
            char base[1024];
            snprintf(base, sizeof base, "%s", argv[1]);
            char *name = basename(base);
            char *dot = strrchr(name, '.');
            if (dot && dot != name) *dot = '\0';
            snprintf(tr->cfg.run_name, sizeof tr->cfg.run_name, "%s", name);
        }
        if (strchr(tr->cfg.run_name, '/')) sd_fail("[run] name = %s: must not contain '/'", tr->cfg.run_name);
        if (snprintf(tr->run_dir, sizeof tr->run_dir, "%s/%s", tr->cfg.out_dir, tr->cfg.run_name) >= (int)sizeof tr->run_dir)
            sd_fail("run directory path '%s/%s' is too long", tr->cfg.out_dir, tr->cfg.run_name);
        if (path_exists(tr->run_dir))
            sd_fail("run directory '%s' already exists; continue it with ./train --resume %s, or choose another "
                    "name with run.name=NAME",
                    tr->run_dir, tr->run_dir);
    }

    omp_set_num_threads(tr->cfg.threads);
    openblas_set_num_threads(tr->cfg.threads);

    tr->ps = sd_calloc(1, sizeof *tr->ps);
    tr->task = task_create(&tr->cfg, tr->ps, err, sizeof err);
    if (!tr->task) sd_fail("%s", err);
    optimizer_from_config(&tr->cfg, &tr->opt);
    schedule_from_config(&tr->cfg, &tr->sched);
    graph_init(&tr->graph);
    long n_train = tr->task->n_train;
    if (tr->cfg.accumulate > batch_count(tr))
        sd_fail("[train] accumulate = %d exceeds the %ld examples per step", tr->cfg.accumulate, batch_count(tr));
    tr->batch_idx = sd_malloc((size_t)batch_count(tr) * sizeof(long));
    for (int i = 0; i < 2; i++) {
        tr->epoch_perm[i] = sd_malloc((size_t)n_train * sizeof(int));
        tr->perm_epoch[i] = -1;
    }
    tr->train_full_step = tr->val_95_step = -1;
    tr->tty = isatty(STDERR_FILENO);
    if (bench_steps > 0) return bench(tr, bench_steps);

    char metrics_path[1100], path[1100];
    snprintf(metrics_path, sizeof metrics_path, "%s/metrics.csv", tr->run_dir);
    if (resume) {
        long step = checkpoint_load_latest(tr->run_dir, tr->ps, &tr->opt, &tr->wall_offset, err, sizeof err);
        if (step == -2) sd_fail("no usable checkpoint in %s/checkpoints: %s", tr->run_dir, err);
        if (step == -1) {
            /* Killed before the first checkpoint: start over with the same initialisation. */
            step = 0;
            tr->wall_offset = 0.0;
        }
        tr->step = step;
        /* Rows and snapshots after the checkpoint are redone; from step 0 that
         * includes step 0's own row and snapshot. */
        long keep_step = tr->step > 0 ? tr->step : -1;
        if (tr->step >= tr->cfg.steps) {
            fprintf(stderr, "%s is already complete at step %ld of %ld\n", tr->run_dir, tr->step, tr->cfg.steps);
            return 0;
        }
        snprintf(path, sizeof path, "%s/config.ini", tr->run_dir);
        if (config_write(&tr->cfg, path, err, sizeof err) != 0) sd_fail("%s", err);
        truncate_metrics(metrics_path, keep_step, tr->cfg.trace_prune > 0);
        checkpoint_remove_after(tr->run_dir, tr->step);
        snprintf(path, sizeof path, "%s/trace/steps.npy", tr->run_dir);
        /* From step 0 nothing of the trace is kept, so it is created anew. This
         * also recovers a start that was killed while creating the files. */
        int have_trace = path_exists(path) && keep_step >= 0;
        if (tr->cfg.trace_every > 0) {
            tr->tracer = tracer_open(tr->run_dir, tr->ps, tr->cfg.trace_layers, tr->cfg.trace_vectors, have_trace,
                                     keep_step, err, sizeof err);
            if (!tr->tracer ||
                tracer_set_pairs(tr->tracer, tr->task->pairs, tr->task->n_pairs, have_trace, keep_step, err, sizeof err) != 0)
                sd_fail("%s", err);
        }
        fprintf(stderr, "resuming %s at step %ld of %ld (its newest checkpoint; later steps are redone)\n",
                tr->run_dir, tr->step, tr->cfg.steps);
    } else {
        if (sd_make_dirs(tr->cfg.out_dir, err, sizeof err) != 0) sd_fail("%s", err);
        if (access(tr->cfg.out_dir, W_OK) != 0) sd_fail("output directory '%s' is not writable", tr->cfg.out_dir);
        if (mkdir(tr->run_dir, 0777) != 0) sd_fail("cannot create run directory '%s': %s", tr->run_dir, strerror(errno));
        snprintf(path, sizeof path, "%s/config.ini", tr->run_dir);
        if (config_write(&tr->cfg, path, err, sizeof err) != 0) sd_fail("%s", err);
        truncate_metrics(metrics_path, -1, tr->cfg.trace_prune > 0);
        if (tr->cfg.trace_every > 0) {
            tr->tracer = tracer_open(tr->run_dir, tr->ps, tr->cfg.trace_layers, tr->cfg.trace_vectors, 0, 0, err,
                                     sizeof err);
            if (!tr->tracer || tracer_set_pairs(tr->tracer, tr->task->pairs, tr->task->n_pairs, 0, 0, err, sizeof err) != 0)
                sd_fail("%s", err);
        }
        fprintf(stderr, "training %s: %s %s, %ld parameters, %ld training and %ld validation examples\n",
                tr->run_dir, tr->cfg.task, tr->cfg.arch, tr->ps->total_size, tr->task->n_train, tr->task->n_val);
    }
    tr->metrics = sd_fopen(metrics_path, "a");
    tr->start = now_seconds();

    double last_val_acc = NAN, last_train_acc = NAN, last_loss = NAN;
    if (tr->step == 0) {
        take_snapshot(tr);
        evaluate_and_log(tr, tr->cfg.lr * schedule_factor(&tr->sched, 0), &last_val_acc, &last_train_acc, &last_loss);
        write_checkpoint(tr);
    }

    double rate_t0 = now_seconds(), last_draw = 0.0;
    long rate_s0 = tr->step;
    while (tr->step < tr->cfg.steps) {
        double lr = tr->cfg.lr * schedule_factor(&tr->sched, tr->step);
        train_step(tr, lr);
        int at_end = tr->step == tr->cfg.steps;
        double t_trace = now_seconds();
        if (tr->cfg.trace_every > 0 && (tr->step % tr->cfg.trace_every == 0 || at_end)) take_snapshot(tr);
        double t_eval = now_seconds();
        if (tr->step % tr->cfg.eval_every == 0 || at_end)
            evaluate_and_log(tr, lr, &last_val_acc, &last_train_acc, &last_loss);
        double t_ckpt = now_seconds();
        if (tr->step % tr->cfg.checkpoint_every == 0 || at_end) write_checkpoint(tr);
        tr->seconds_trace += t_eval - t_trace;
        tr->seconds_eval += t_ckpt - t_eval;
        tr->seconds_checkpoint += now_seconds() - t_ckpt;
        double t = now_seconds();
        double rate = (double)(tr->step - rate_s0) / (t - rate_t0 + 1e-9);
        if (at_end || (tr->tty ? t - last_draw > 0.25 : tr->step % tr->cfg.log_every == 0)) {
            progress(tr, last_loss, last_train_acc, last_val_acc, rate, at_end);
            last_draw = t;
        }
    }
    fclose(tr->metrics);
    tracer_close(tr->tracer);
    if (getenv("SPECDYN_PROFILE"))
        fprintf(stderr, "trace %.3f s, evaluation %.3f s, checkpoints %.3f s\n", tr->seconds_trace, tr->seconds_eval,
                tr->seconds_checkpoint);
    graph_profile_report(stderr);
    fprintf(stderr, "finished %s: %ld steps in %.1f s", tr->run_dir, tr->step, wall_now(tr));
    if (tr->train_full_step >= 0) fprintf(stderr, "; train_acc 1.0 first at step %ld", tr->train_full_step);
    if (tr->val_95_step >= 0) fprintf(stderr, "; val_acc >= 0.95 first at step %ld", tr->val_95_step);
    fputc('\n', stderr);
    task_free(tr->task);
    params_free(tr->ps);
    free(tr->ps);
    graph_free(&tr->graph);
    free(tr->batch_idx);
    free(tr->epoch_perm[0]);
    free(tr->epoch_perm[1]);
    return 0;
}
