/* ./sweep SWEEP.ini [--jobs N] [--force] [section.key=value ...]
 * ./sweep SWEEP.ini --slurm [--force] [section.key=value ...]
 *
 * Expands a sweep file (see trace/sweep.h) into run directories under
 * out_dir/name/ and either trains them here, N ./train processes at a time,
 * or writes a SLURM array script. Rerunning the same command skips finished
 * runs and resumes stopped ones, so a sweep killed at any moment (even with
 * SIGKILL) continues where it stopped. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/ioctl.h>
#include <sys/prctl.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "error.h"
#include "sweep.h"

#define ERR_LEN 2048
#define MAX_ARGS 256
/* Seconds between progress lines when stderr is not a terminal. */
#define LOG_SECONDS 30.0
/* Seconds between redraws of the progress table on a terminal. */
#define REDRAW_SECONDS 1.0

static void print_usage(FILE *f) {
    fprintf(f,
            "usage: ./sweep SWEEP.ini [--jobs N] [--force] [section.key=value ...]\n"
            "       ./sweep SWEEP.ini --slurm [--force] [section.key=value ...]\n"
            "\n"
            "Trains every run of the grid in SWEEP.ini (a base config, a [grid] of config keys with\n"
            "comma-separated values and seeds) into out_dir/name/RUN/, N runs at a time, each with\n"
            "run.threads = max(1, cores / N). Rerunning the same command skips finished runs and\n"
            "resumes stopped ones. Overrides apply to every run and must be the same on every rerun;\n"
            "grid.KEY=V1,V2 replaces a grid list, and sweep.KEY=VALUE and slurm.KEY=VALUE replace\n"
            "lines of the [sweep] and [slurm] sections (for example sweep.name=NAME).\n"
            "\n"
            "options:\n"
            "  --jobs N, -j N  runs trained at the same time (default 1, at most the number of cores)\n"
            "  --slurm         write out_dir/name/slurm.sh (an sbatch array script, one task per run),\n"
            "                  tasks.txt and sweep.json, and train nothing\n"
            "  --force         allow a grid of more than %d runs\n"
            "  -h, --help      print this help and exit\n"
            "\n"
            "./report out_dir/name aggregates the runs over seeds. Exit status: 0 when every run\n"
            "finished, 1 when a run failed or on an error, 2 on invalid arguments.\n",
            SWEEP_MAX_RUNS);
}

static void usage_error(const char *message, const char *arg) {
    fprintf(stderr, "specdyn: error: %s%s%s\n", message, arg ? ": " : "", arg ? arg : "");
    fprintf(stderr, "usage: ./sweep SWEEP.ini [--jobs N] [--slurm] [--force] [section.key=value ...]; see ./sweep --help\n");
    exit(2);
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

static void format_duration(double seconds, char *buf, size_t len) {
    if (!(seconds >= 0.0) || seconds > 1e8) {
        snprintf(buf, len, "-");
        return;
    }
    long s = (long)(seconds + 0.5);
    if (s >= 3600)
        snprintf(buf, len, "%ld:%02ld:%02ld", s / 3600, s / 60 % 60, s % 60);
    else
        snprintf(buf, len, "%ld:%02ld", s / 60, s % 60);
}

/* ./train next to this executable. */
static void find_train(char *path, size_t len) {
    char self[PATH_MAX];
    ssize_t n = readlink("/proc/self/exe", self, sizeof self - 1);
    if (n < 0) sd_fail("cannot read /proc/self/exe to find ./train: %s", strerror(errno));
    self[n] = '\0';
    char *slash = strrchr(self, '/');
    *slash = '\0';
    snprintf(path, len, "%s/train", self);
    if (access(path, X_OK) != 0) sd_fail("'%s' not found or not executable; build it with make", path);
}

/* ---- planning: what each run needs ------------------------------------------------ */

typedef enum {
    RUN_COMPLETE,   /* finished before this invocation */
    RUN_FRESH,      /* no run directory yet */
    RUN_RESUME,     /* stopped before train.steps */
    RUN_RUNNING,
    RUN_FINISHED,   /* finished in this invocation */
    RUN_FAILED,
} RunState;

static const char *const STATE_NAMES[] = {"complete", "pending", "pending", "running", "finished", "FAILED"};

typedef struct {
    SweepRun *run;
    RunState state;
    int threads;
    long steps;              /* train.steps */
    long step;               /* newest step in metrics.csv */
    long start_step;
    double start_time;
    int stale_dir;           /* the run directory exists without config.ini */
    pid_t pid;
    char log_path[SWEEP_PATH + CONFIG_STR + 64];  /* where the child's stderr goes */
    int log_in_run;          /* log_path is RUN/train.log */
    char message[512];       /* why it failed */
} Job;

/* Files that a kill between ./train's mkdir and its config write can leave. */
static int only_leftovers(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return 0;
    struct dirent *ent;
    int ok = 1;
    while ((ent = readdir(d))) {
        const char *n = ent->d_name;
        if (strcmp(n, ".") == 0 || strcmp(n, "..") == 0 || strcmp(n, "train.log") == 0 ||
            strncmp(n, "config.ini.tmp.", 15) == 0)
            continue;
        ok = 0;
    }
    closedir(d);
    return ok;
}

static void remove_leftovers(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *ent;
    char path[SWEEP_PATH + 300];
    while ((ent = readdir(d))) {
        if (strcmp(ent->d_name, ".") == 0 || strcmp(ent->d_name, "..") == 0) continue;
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        unlink(path);
    }
    closedir(d);
    if (rmdir(dir) != 0) sd_fail("cannot remove the incomplete run directory '%s': %s", dir, strerror(errno));
}

/* Decide for every run whether it is complete, fresh or to be resumed. Fail
 * on the first run whose config differs from what this command gives it. */
static Job *plan_jobs(Sweep *s, int default_threads) {
    Job *jobs = sd_calloc((size_t)s->n_runs, sizeof(Job));
    char err[ERR_LEN];
    for (long r = 0; r < s->n_runs; r++) {
        Job *job = &jobs[r];
        job->run = &s->runs[r];
        job->steps = job->run->config.steps;
        job->threads = default_threads;
        Config existing;
        int rc = sweep_check_run_config(s, job->run, &existing, err, sizeof err);
        if (rc < 0) sd_fail("%s", err);
        if (rc == 1) {
            job->state = RUN_FRESH;
            if (path_exists(job->run->dir)) {
                if (!only_leftovers(job->run->dir))
                    sd_fail("run directory '%s' exists but has no config.ini, so it was not made by ./train; move "
                            "it away and rerun",
                            job->run->dir);
                job->stale_dir = 1;
            }
            continue;
        }
        job->threads = existing.threads;
        long latest = sweep_latest_checkpoint(job->run->dir);
        job->step = latest > 0 ? latest : 0;
        job->state = latest >= job->steps ? RUN_COMPLETE : RUN_RESUME;
    }
    return jobs;
}

/* ---- SLURM ------------------------------------------------------------------------ */

/* Write s as one shell word in single quotes. */
static void shell_quote(FILE *f, const char *s) {
    fputc('\'', f);
    for (; *s; s++) {
        if (*s == '\'')
            fputs("'\\''", f);
        else
            fputc(*s, f);
    }
    fputc('\'', f);
}

static void write_slurm(const Sweep *s, const char *train, int threads) {
    char cwd[PATH_MAX], abs_dir[PATH_MAX], path[SWEEP_PATH + 32], tmp[SWEEP_PATH + 32], err[ERR_LEN];
    if (!getcwd(cwd, sizeof cwd)) sd_fail("cannot read the current directory: %s", strerror(errno));
    if (sweep_write_manifest(s, err, sizeof err) != 0) sd_fail("%s", err);
    if (!realpath(s->dir, abs_dir)) sd_fail("cannot resolve '%s': %s", s->dir, strerror(errno));

    snprintf(path, sizeof path, "%s/tasks.txt", s->dir);
    snprintf(tmp, sizeof tmp, "%s/tasks.txt.tmp", s->dir);
    FILE *f = sd_fopen(tmp, "w");
    for (long r = 0; r < s->n_runs; r++) {
        char *args[MAX_ARGS];
        int n = sweep_run_arguments(s, &s->runs[r], args, MAX_ARGS);
        shell_quote(f, train);
        fputc(' ', f);
        shell_quote(f, s->base);
        for (int i = 0; i < n; i++) {
            fputc(' ', f);
            shell_quote(f, args[i]);
            free(args[i]);
        }
        fprintf(f, " 'run.threads=%d'\n", threads);
    }
    sd_fclose(f, tmp);
    if (rename(tmp, path) != 0) sd_fail("cannot replace '%s': %s", path, strerror(errno));

    snprintf(path, sizeof path, "%s/slurm.sh", s->dir);
    snprintf(tmp, sizeof tmp, "%s/slurm.sh.tmp", s->dir);
    f = sd_fopen(tmp, "w");
    fprintf(f, "#!/bin/bash\n");
    fprintf(f, "# SLURM array job for the sweep %s, written by ./sweep from %s.\n", s->name, s->path);
    fprintf(f, "# Array task i trains run i: line i + 1 of tasks.txt when the run directory does not\n"
               "# exist yet, else ./train --resume, so a requeued or resubmitted task continues from\n"
               "# the run's newest checkpoint and a finished run returns at once.\n"
               "# Submit: sbatch %s/slurm.sh\n",
            s->dir);
    fprintf(f, "#SBATCH --job-name=specdyn-%s\n", s->name);
    fprintf(f, "#SBATCH --array=0-%ld\n", s->n_runs - 1);
    fprintf(f, "#SBATCH --requeue\n");
    fprintf(f, "#SBATCH --ntasks=1\n");
    fprintf(f, "#SBATCH --cpus-per-task=%d\n", threads);
    fprintf(f, "#SBATCH --output=%s/slurm-%%A_%%a.out\n", abs_dir);
    if (s->slurm.time[0]) fprintf(f, "#SBATCH --time=%s\n", s->slurm.time);
    if (s->slurm.mem[0]) fprintf(f, "#SBATCH --mem=%s\n", s->slurm.mem);
    if (s->slurm.partition[0]) fprintf(f, "#SBATCH --partition=%s\n", s->slurm.partition);
    if (s->slurm.account[0]) fprintf(f, "#SBATCH --account=%s\n", s->slurm.account);
    fprintf(f, "set -euo pipefail\n");
    fputs("cd ", f);
    shell_quote(f, cwd);
    fputs("\ntask=${SLURM_ARRAY_TASK_ID:?SLURM_ARRAY_TASK_ID is not set: submit this script with sbatch}\n", f);
    fputs("runs=(\n", f);
    for (long r = 0; r < s->n_runs; r++) {
        fputs("    ", f);
        shell_quote(f, s->runs[r].name);
        fputc('\n', f);
    }
    fputs(")\n", f);
    fputs("if [ \"$task\" -lt 0 ] || [ \"$task\" -ge ${#runs[@]} ]; then\n"
          "    echo \"specdyn: error: SLURM_ARRAY_TASK_ID=$task is outside 0..$((${#runs[@]} - 1))\" >&2\n"
          "    exit 1\n"
          "fi\n",
          f);
    fputs("run=", f);
    shell_quote(f, s->dir);
    fputs("/\"${runs[$task]}\"\n", f);
    fputs("if [ -f \"$run/config.ini\" ]; then\n    exec ", f);
    shell_quote(f, train);
    fputs(" --resume \"$run\"\nfi\n", f);
    fputs("# A directory without config.ini is left by a kill before ./train wrote its config: start over.\n"
          "if [ -d \"$run\" ]; then\n"
          "    rm -f \"$run\"/config.ini.tmp.* \"$run\"/train.log\n"
          "    rmdir \"$run\"\n"
          "fi\n",
          f);
    fputs("command=$(sed -n \"$((task + 1))p\" ", f);
    shell_quote(f, abs_dir);
    fputs("/tasks.txt)\neval \"exec $command\"\n", f);
    sd_fclose(f, tmp);
    if (chmod(tmp, 0755) != 0 || rename(tmp, path) != 0) sd_fail("cannot write '%s': %s", path, strerror(errno));

    printf("wrote %s/slurm.sh and %s/tasks.txt: %ld array tasks with %d CPUs each\n", s->dir, s->dir, s->n_runs,
           threads);
    printf("submit with: sbatch %s/slurm.sh\n", s->dir);
    printf("after it ends: ./report %s\n", s->dir);
}

/* ---- running ------------------------------------------------------------------------ */

static volatile sig_atomic_t stop_signal;

static void on_stop_signal(int sig) { stop_signal = sig; }

/* Step of the last complete row of RUN/metrics.csv, or -1. */
static long metrics_step(const char *dir) {
    char path[SWEEP_PATH + 32];
    snprintf(path, sizeof path, "%s/metrics.csv", dir);
    FILE *f = fopen(path, "r");
    if (!f) return -1;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    /* The last line ending in '\n'; a torn line after it is ignored. */
    char *end = strrchr(buf, '\n');
    if (!end) return -1;
    *end = '\0';
    char *start = strrchr(buf, '\n');
    start = start ? start + 1 : buf;
    char *after;
    long step = strtol(start, &after, 10);
    return after == start || *after != ',' ? -1 : step;
}

/* The last non-empty line of a log file, with a progress line's "\r" redraws reduced to the last one. */
static void last_line(const char *path, char *out, size_t len) {
    out[0] = '\0';
    FILE *f = fopen(path, "r");
    if (!f) return;
    char buf[4096];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    long from = size > (long)sizeof buf - 1 ? size - (long)sizeof buf + 1 : 0;
    fseek(f, from, SEEK_SET);
    size_t n = fread(buf, 1, sizeof buf - 1, f);
    fclose(f);
    buf[n] = '\0';
    while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r' || buf[n - 1] == ' ')) buf[--n] = '\0';
    char *start = strrchr(buf, '\n');
    start = start ? start + 1 : buf;
    char *cr = strrchr(start, '\r');
    if (cr) start = cr + 1;
    snprintf(out, len, "%.*s", (int)(len - 1), start);
}

/* Move a fresh run's log into RUN/train.log once ./train has created RUN. The
 * log is hard-linked, so the child keeps writing to the same file. */
static void adopt_log(Job *job) {
    if (job->log_in_run || !path_exists(job->run->dir)) return;
    char target[SWEEP_PATH + 32];
    snprintf(target, sizeof target, "%s/train.log", job->run->dir);
    unlink(target);
    if (link(job->log_path, target) != 0) return; /* tried again at the next poll */
    unlink(job->log_path);
    snprintf(job->log_path, sizeof job->log_path, "%s", target);
    job->log_in_run = 1;
}

static void start_job(const Sweep *s, Job *job, const char *train) {
    char *argv[MAX_ARGS + 8];
    int argc = 0;
    char threads[64];
    snprintf(threads, sizeof threads, "run.threads=%d", job->threads);
    argv[argc++] = (char *)train;
    int fd;
    if (job->state == RUN_RESUME) {
        argv[argc++] = "--resume";
        argv[argc++] = job->run->dir;
        snprintf(job->log_path, sizeof job->log_path, "%s/train.log", job->run->dir);
        job->log_in_run = 1;
        fd = open(job->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0666);
    } else {
        if (job->stale_dir) remove_leftovers(job->run->dir);
        argv[argc++] = (char *)s->base;
        argc += sweep_run_arguments(s, job->run, argv + argc, MAX_ARGS);
        argv[argc++] = threads;
        snprintf(job->log_path, sizeof job->log_path, "%s/.%s.log", s->dir, job->run->name);
        job->log_in_run = 0;
        fd = open(job->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0666);
    }
    argv[argc] = NULL;
    if (fd < 0) sd_fail("cannot open log '%s': %s", job->log_path, strerror(errno));

    fflush(NULL);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) sd_fail("fork failed: %s", strerror(errno));
    if (pid == 0) {
        /* A child outliving a SIGKILLed ./sweep would race a rerun's ./train --resume on the same run. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(1);
        signal(SIGINT, SIG_DFL);
        signal(SIGTERM, SIG_DFL);
        signal(SIGHUP, SIG_DFL);
        int devnull = open("/dev/null", O_RDONLY);
        if (devnull >= 0) dup2(devnull, STDIN_FILENO);
        dup2(fd, STDOUT_FILENO);
        dup2(fd, STDERR_FILENO);
        execv(train, argv);
        fprintf(stderr, "specdyn: error: cannot run '%s': %s\n", train, strerror(errno));
        _exit(127);
    }
    close(fd);
    /* Fresh runs: argv[2 .. argc - 2] came from sweep_run_arguments(). */
    if (job->state != RUN_RESUME)
        for (int i = 2; i < argc - 1; i++) free(argv[i]);
    job->pid = pid;
    job->start_step = job->step;
    job->start_time = now_seconds();
    job->state = RUN_RUNNING;
}

/* Record how a child ended. */
static void finish_job(const Sweep *s, Job *job, int status) {
    job->pid = 0;
    if (!job->log_in_run) adopt_log(job);
    long step = metrics_step(job->run->dir);
    if (step >= 0) job->step = step;
    long latest = sweep_latest_checkpoint(job->run->dir);
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0 && latest >= job->steps) {
        job->state = RUN_FINISHED;
        job->step = latest;
        return;
    }
    job->state = RUN_FAILED;
    if (!job->log_in_run) {
        /* ./train failed before creating the run directory: keep its log beside the runs. */
        char kept[SWEEP_PATH + CONFIG_STR + 64];
        snprintf(kept, sizeof kept, "%s/%s.train.log", s->dir, job->run->name);
        if (rename(job->log_path, kept) == 0) snprintf(job->log_path, sizeof job->log_path, "%s", kept);
    }
    char line[400];
    last_line(job->log_path, line, sizeof line);
    char how[64];
    if (WIFEXITED(status) && WEXITSTATUS(status) == 0)
        snprintf(how, sizeof how, "exited before step %ld", job->steps);
    else if (WIFEXITED(status))
        snprintf(how, sizeof how, "exit status %d", WEXITSTATUS(status));
    else
        snprintf(how, sizeof how, "killed by signal %d", WTERMSIG(status));
    snprintf(job->message, sizeof job->message, "%s: %s (log: %s)", how, line[0] ? line : "no output",
             job->log_path);
}

typedef struct {
    const Sweep *s;
    Job *jobs;
    int tty;
    int drawn_lines;         /* lines of the last table, to move the cursor back over */
    double start_time;
} Progress;

static double job_rate(const Job *job, double now) {
    double elapsed = now - job->start_time;
    return elapsed > 2.0 && job->step > job->start_step ? (double)(job->step - job->start_step) / elapsed : 0.0;
}

/* Counts by state and the sweep's ETA: remaining steps over the summed rate of running runs. */
static void sweep_totals(const Progress *p, double now, int counts[6], char *eta, size_t len) {
    memset(counts, 0, 6 * sizeof(int));
    double remaining = 0.0, rate = 0.0;
    for (long r = 0; r < p->s->n_runs; r++) {
        const Job *job = &p->jobs[r];
        counts[job->state]++;
        if (job->state == RUN_FRESH || job->state == RUN_RESUME || job->state == RUN_RUNNING)
            remaining += (double)(job->steps - job->step);
        if (job->state == RUN_RUNNING) rate += job_rate(job, now);
    }
    format_duration(rate > 0 ? remaining / rate : -1.0, eta, len);
}

static void job_eta(const Job *job, double now, char *eta, size_t len) {
    double rate = job_rate(job, now);
    format_duration(rate > 0 ? (double)(job->steps - job->step) / rate : -1.0, eta, len);
}

static int terminal_rows(void) {
    struct winsize ws;
    if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_row > 0) return ws.ws_row;
    return 24;
}

/* Redraw the table in place: a summary line, then one row per run (only running
 * and failed runs when all of them do not fit the terminal). */
static void draw_table(Progress *p) {
    double now = now_seconds();
    int counts[6];
    char eta[32];
    sweep_totals(p, now, counts, eta, sizeof eta);
    if (p->drawn_lines > 0) fprintf(stderr, "\033[%dA", p->drawn_lines);
    int lines = 0;
    fprintf(stderr, "\r\033[Ksweep %s: %ld runs, %d complete, %d running, %d pending, %d failed  ETA %s\n", p->s->name,
            p->s->n_runs, counts[RUN_COMPLETE] + counts[RUN_FINISHED], counts[RUN_RUNNING],
            counts[RUN_FRESH] + counts[RUN_RESUME], counts[RUN_FAILED], eta);
    fprintf(stderr, "\033[K%-44s %17s %9s  %s\n", "run", "step", "ETA", "status");
    lines += 2;
    int all = p->s->n_runs + 3 <= terminal_rows() - 1;
    for (long r = 0; r < p->s->n_runs; r++) {
        const Job *job = &p->jobs[r];
        if (!all && job->state != RUN_RUNNING && job->state != RUN_FAILED) continue;
        if (lines >= terminal_rows() - 2) break;
        char steps[48], run_eta[32] = "";
        snprintf(steps, sizeof steps, "%ld/%ld", job->step, job->steps);
        if (job->state == RUN_RUNNING) job_eta(job, now, run_eta, sizeof run_eta);
        fprintf(stderr, "\033[K%-44s %17s %9s  %s\n", job->run->name, steps, run_eta, STATE_NAMES[job->state]);
        lines++;
    }
    /* Clear rows left over from a longer previous table. */
    for (int i = lines; i < p->drawn_lines; i++) fputs("\033[K\n", stderr);
    if (p->drawn_lines > lines) fprintf(stderr, "\033[%dA", p->drawn_lines - lines);
    p->drawn_lines = lines;
    fflush(stderr);
}

/* One plain line per running run and a summary, for logs. */
static void print_status(const Progress *p) {
    double now = now_seconds();
    int counts[6];
    char eta[32];
    sweep_totals(p, now, counts, eta, sizeof eta);
    for (long r = 0; r < p->s->n_runs; r++) {
        const Job *job = &p->jobs[r];
        if (job->state != RUN_RUNNING) continue;
        char run_eta[32];
        job_eta(job, now, run_eta, sizeof run_eta);
        fprintf(stderr, "  %s: step %ld/%ld, ETA %s\n", job->run->name, job->step, job->steps, run_eta);
    }
    fprintf(stderr, "sweep %s: %d of %ld runs complete, %d running, %d pending, %d failed, ETA %s\n", p->s->name,
            counts[RUN_COMPLETE] + counts[RUN_FINISHED], p->s->n_runs, counts[RUN_RUNNING],
            counts[RUN_FRESH] + counts[RUN_RESUME], counts[RUN_FAILED], eta);
    fflush(stderr);
}

/* An event line; on a terminal it goes above the table, which is redrawn below it. */
static void print_event(Progress *p, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void print_event(Progress *p, const char *fmt, ...) {
    if (p->tty && p->drawn_lines > 0) {
        fprintf(stderr, "\033[%dA\r\033[J", p->drawn_lines);
        p->drawn_lines = 0;
    }
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    fflush(stderr);
}

static void lock_sweep(const Sweep *s) {
    char path[SWEEP_PATH + 32];
    snprintf(path, sizeof path, "%s/.sweep.lock", s->dir);
    /* Kept open until exit: the kernel drops the lock when this process ends, even by SIGKILL. */
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0666);
    if (fd < 0) sd_fail("cannot open '%s': %s", path, strerror(errno));
    if (flock(fd, LOCK_EX | LOCK_NB) != 0)
        sd_fail("another ./sweep is running on %s (it holds %s); wait for it or stop it first", s->dir, path);
}

static int run_local(const Sweep *s, Job *jobs, const char *train, int n_jobs, int cores) {
    char err[ERR_LEN];
    if (sweep_write_manifest(s, err, sizeof err) != 0) sd_fail("%s", err);
    lock_sweep(s);

    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_stop_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    sigaction(SIGHUP, &sa, NULL);

    Progress p = {s, jobs, isatty(STDERR_FILENO), 0, now_seconds()};
    int counts[6];
    char eta[32];
    sweep_totals(&p, p.start_time, counts, eta, sizeof eta);
    fprintf(stderr, "sweep %s: %ld runs in %s: %d complete, %d to resume, %d to start; %d at a time\n", s->name,
            s->n_runs, s->dir, counts[RUN_COMPLETE], counts[RUN_RESUME], counts[RUN_FRESH], n_jobs);

    double last_report = now_seconds();
    long next = 0;
    int running = 0, threads_used = 0;
    for (;;) {
        if (stop_signal) break;
        /* Start runs while slots and cores are free; one run may always start,
         * even when a resumed run's recorded run.threads exceeds the cores. */
        while (running < n_jobs && next < s->n_runs) {
            Job *job = &jobs[next];
            if (job->state != RUN_FRESH && job->state != RUN_RESUME) {
                next++;
                continue;
            }
            if (running > 0 && threads_used + job->threads > cores) break;
            int resume = job->state == RUN_RESUME;
            start_job(s, job, train);
            running++;
            threads_used += job->threads;
            next++;
            if (resume)
                print_event(&p, "resume %s at step %ld of %ld", job->run->name, job->step, job->steps);
            else
                print_event(&p, "start  %s", job->run->name);
        }
        if (running == 0) break;

        struct timespec ts = {0, 200000000};
        nanosleep(&ts, NULL);
        int status;
        pid_t pid;
        while ((pid = waitpid(-1, &status, WNOHANG)) > 0) {
            for (long r = 0; r < s->n_runs; r++) {
                Job *job = &jobs[r];
                if (job->state != RUN_RUNNING || job->pid != pid) continue;
                finish_job(s, job, status);
                running--;
                threads_used -= job->threads;
                char took[32];
                format_duration(now_seconds() - job->start_time, took, sizeof took);
                if (job->state == RUN_FINISHED)
                    print_event(&p, "done   %s in %s", job->run->name, took);
                else
                    print_event(&p, "FAILED %s: %s", job->run->name, job->message);
            }
        }
        for (long r = 0; r < s->n_runs; r++) {
            Job *job = &jobs[r];
            if (job->state != RUN_RUNNING) continue;
            if (!job->log_in_run) adopt_log(job);
            long step = metrics_step(job->run->dir);
            if (step >= 0) job->step = step;
        }
        double now = now_seconds();
        if (p.tty && now - last_report >= REDRAW_SECONDS) {
            draw_table(&p);
            last_report = now;
        } else if (!p.tty && now - last_report >= LOG_SECONDS) {
            print_status(&p);
            last_report = now;
        }
    }

    if (stop_signal) {
        print_event(&p, "stopping: signal %d; rerun the same command to resume", (int)stop_signal);
        for (long r = 0; r < s->n_runs; r++)
            if (jobs[r].state == RUN_RUNNING) kill(jobs[r].pid, SIGTERM);
        for (long r = 0; r < s->n_runs; r++)
            if (jobs[r].state == RUN_RUNNING) waitpid(jobs[r].pid, NULL, 0);
        return 128 + (int)stop_signal;
    }

    if (p.tty) draw_table(&p);
    sweep_totals(&p, now_seconds(), counts, eta, sizeof eta);
    char took[32];
    format_duration(now_seconds() - p.start_time, took, sizeof took);
    fprintf(stderr, "sweep %s: %d runs finished now, %d were complete, %d failed, in %s\n", s->name,
            counts[RUN_FINISHED], counts[RUN_COMPLETE], counts[RUN_FAILED], took);
    for (long r = 0; r < s->n_runs; r++)
        if (jobs[r].state == RUN_FAILED) fprintf(stderr, "failed: %s: %s\n", jobs[r].run->name, jobs[r].message);
    if (counts[RUN_FAILED] == 0) fprintf(stderr, "aggregate with: ./report %s\n", s->dir);
    return counts[RUN_FAILED] ? 1 : 0;
}

/* ---- main ----------------------------------------------------------------------------- */

int main(int argc, char **argv) {
    const char *sweep_path = NULL;
    char **overrides = sd_calloc((size_t)argc, sizeof(char *));
    int n_overrides = 0, n_jobs = 1, slurm = 0, force = 0, thread_override = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            print_usage(stdout);
            return 0;
        }
        if (strcmp(arg, "--jobs") == 0 || strcmp(arg, "-j") == 0 || strncmp(arg, "--jobs=", 7) == 0) {
            const char *value = arg[2] == 'j' && arg[6] == '=' ? arg + 7 : (i + 1 < argc ? argv[++i] : NULL);
            if (!value) usage_error("--jobs needs a number", NULL);
            char *end;
            long n = strtol(value, &end, 10);
            if (end == value || *end != '\0' || n < 1 || n > 4096) usage_error("--jobs needs a number from 1 to 4096", value);
            n_jobs = (int)n;
        } else if (strcmp(arg, "--slurm") == 0) {
            slurm = 1;
        } else if (strcmp(arg, "--force") == 0) {
            force = 1;
        } else if (arg[0] == '-') {
            usage_error("unknown option", arg);
        } else if (strchr(arg, '=')) {
            overrides[n_overrides++] = argv[i];
            if (strncmp(arg, "run.threads=", 12) == 0) thread_override = 1;
        } else if (!sweep_path) {
            sweep_path = arg;
        } else {
            usage_error("more than one sweep file (overrides have the form section.key=value)", arg);
        }
    }
    if (!sweep_path) usage_error("no sweep file given", NULL);

    char train[PATH_MAX + 16];
    find_train(train, sizeof train);
    Sweep s;
    char err[ERR_LEN];
    if (sweep_load(&s, sweep_path, overrides, n_overrides, force ? LONG_MAX : SWEEP_MAX_RUNS, err, sizeof err) != 0)
        sd_fail("%s", err);

    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    if (cores < 1) cores = 1;
    if (!slurm && n_jobs > cores) {
        fprintf(stderr, "note: --jobs %d is more than the %ld cores; running %ld at a time\n", n_jobs, cores, cores);
        n_jobs = (int)cores;
    }
    /* A run.threads override wins; its value is already in every run's config. */
    int threads = thread_override ? s.runs[0].config.threads : (int)(cores / n_jobs > 1 ? cores / n_jobs : 1);
    if (slurm) threads = thread_override ? s.runs[0].config.threads : s.slurm.cpus_per_task;

    Job *jobs = plan_jobs(&s, threads);
    int rc = 0;
    if (slurm)
        write_slurm(&s, train, threads);
    else
        rc = run_local(&s, jobs, train, n_jobs, (int)cores);
    free(jobs);
    sweep_free(&s);
    free(overrides);
    return rc;
}
