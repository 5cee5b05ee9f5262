/* End-to-end tests of ./sweep and the sweep report on tests/fixtures/tiny.ini
 * grids of short runs: a local sweep and its rerun, mismatched overrides,
 * bad sweep files, the SLURM script run by hand, SIGKILL of ./sweep and its
 * children followed by a rerun, and ./report on a sweep directory. Like
 * test_train.c they run ./sweep, ./train and ./report from the repository root. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "test.h"

#define TINY "tests/fixtures/tiny.ini"
#define STEPS "train.steps=40"
#define STEPS_QUOTED "'train.steps=40'"

/* Write a sweep file named name.ini in the test directory with out_dir = tmp/name-runs. */
static void write_sweep(const char *name, const char *body, char *path, size_t len) {
    snprintf(path, len, "%s/%s.ini", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    fprintf(f, "[sweep]\nbase = " TINY "\nname = %s\nout_dir = %s/%s-runs\n\n%s", name, test_tmpdir(), name, body);
    fclose(f);
}

static long last_checkpoint(const char *run_dir) {
    char path[2048];
    if (snprintf(path, sizeof path, "%s/checkpoints", run_dir) >= (int)sizeof path) return -1;
    DIR *d = opendir(path);
    long latest = -1;
    struct dirent *ent;
    while (d && (ent = readdir(d))) {
        long step;
        int end = 0;
        /* A killed write leaves step_N.safetensors.tmp.PID, which is no checkpoint. */
        if (sscanf(ent->d_name, "step_%ld.safetensors%n", &step, &end) == 1 && ent->d_name[end] == '\0' &&
            step > latest)
            latest = step;
    }
    if (d) closedir(d);
    return latest;
}

static int count_occurrences(const char *text, const char *word) {
    int n = 0;
    for (const char *p = strstr(text, word); p; p = strstr(p + 1, word)) n++;
    return n;
}

static void local_sweep_and_rerun(void) {
    char sweep[1024], cmd[10000], out[16384];
    write_sweep("local", "[grid]\noptim.weight_decay = 0, 1.0\nseeds = 0, 1\n", sweep, sizeof sweep);
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 " STEPS, sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "./sweep failed (%d): %s", status, out);

    const char *names[] = {"weight_decay_0-seed_0", "weight_decay_1.0-seed_0", "weight_decay_0-seed_1",
                           "weight_decay_1.0-seed_1"};
    char path[2048];
    for (int i = 0; i < 4; i++) {
        snprintf(path, sizeof path, "%s/local-runs/local/%s", test_tmpdir(), names[i]);
        EXPECT(last_checkpoint(path) == 40, "%s: last checkpoint %ld, expected 40", names[i], last_checkpoint(path));
        snprintf(path, sizeof path, "%s/local-runs/local/%s/train.log", test_tmpdir(), names[i]);
        EXPECT(test_exists(path), "%s has no train.log", names[i]);
    }
    snprintf(path, sizeof path, "%s/local-runs/local/weight_decay_1.0-seed_1/config.ini", test_tmpdir());
    snprintf(cmd, sizeof cmd, "grep -x 'weight_decay = 1' %s && grep -x 'seed = 1' %s && grep -x 'steps = 40' %s && "
                              "grep -x 'threads = 1' %s", path, path, path, path);
    EXPECT(test_run(cmd, out, sizeof out) == 0, "config.ini does not record the grid point, override and threads");
    snprintf(path, sizeof path, "%s/local-runs/local/sweep.json", test_tmpdir());
    EXPECT(test_exists(path), "no sweep.json");

    /* The same command again skips every run. */
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 " STEPS, sweep);
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "rerun failed (%d): %s", status, out);
    EXPECT(strstr(out, "4 complete") && !strstr(out, "start "), "rerun started runs again: %s", out);

    /* A different override is an error naming the run and the key. */
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 train.steps=60", sweep);
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 1, "rerun with other overrides: status %d", status);
    EXPECT(strstr(out, "specdyn: error: run ") && strstr(out, "train.steps = 40") && strstr(out, "weight_decay_0-seed_0"),
           "mismatch message: %s", out);
    EXPECT(count_occurrences(out, "\n") == 1, "expected one error line: %s", out);

    /* ./report aggregates over seeds. */
    snprintf(cmd, sizeof cmd, "./report %s/local-runs/local", test_tmpdir());
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "./report on the sweep failed: %s", out);
    const char *files[] = {"summary.json", "index.html", "sweep_final_accuracy.png", "sweep_final_effective_rank.png",
                           "sweep_effective_rank_blocks.0.mlp.w1.weight.png", "sweep_effective_rank.csv"};
    for (int i = 0; i < 6; i++) {
        snprintf(path, sizeof path, "%s/local-runs/local/report/%s", test_tmpdir(), files[i]);
        EXPECT(test_exists(path), "report has no %s", files[i]);
    }
    snprintf(path, sizeof path, "%s/local-runs/local/report/summary.json", test_tmpdir());
    FILE *f = fopen(path, "r");
    char text[65536] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    text[n] = '\0';
    if (f) fclose(f);
    EXPECT(count_occurrences(text, "\"group\":") == 2, "summary.json should have 2 groups: %.400s", text);
    EXPECT(strstr(text, "\"seeds\":\t[0, 1]") != NULL, "groups should hold seeds 0 and 1: %.400s", text);
    EXPECT(strstr(text, "\"effective_rank_final\"") != NULL, "no effective_rank_final in summary.json");
}

typedef struct {
    const char *body;       /* the sweep file after [sweep] */
    const char *args;       /* extra ./sweep arguments */
    const char *expected;   /* substring of the error line */
} BadSweep;

static void bad_sweep_files_rejected(void) {
    BadSweep cases[] = {
        {"[grid]\noptim.weight_decy = 0, 1\n", "", "weight_decay"},
        {"[grid]\noptim.weight_decay =\n", "", "no values"},
        {"[grid]\noptim.weight_decay = 0, , 1\n", "", "value 2 of 3 is empty"},
        {"[grid]\noptim.weight_decay = 0.1, 0.10\n", "", "duplicate value '0.10'"},
        {"[grid]\nseeds = 1, 1\n", "", "duplicate value"},
        {"[grid]\noptim.weight_decay = -1\n", "", "weight_decay"},
        {"[grid]\noptim.lr = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11\noptim.weight_decay = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\n"
         "seeds = 0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10\n",
         "", "more than the limit of 1000; pass --force"},
        {"[grid]\nrun.name = a, b\n", "", "cannot be a grid key"},
        {"[grid]\noptim.weight_decay = 0, 1\n", "optim.weight_decay=0.5", "is a grid key"},
        {"[grid]\nweight_decay = 0, 1\n", "", "not of the form section.key"},
        {"[gird]\n", "", "unknown section [gird]"},
        {"[grid]\noptim.weight_decay = 0, 1\n", "grid.seeds=3,3", "duplicate value"},
        {"[grid]\noptim.weight_decay = 0, 1\n", "grid.optim.weight_decay=", "override 'grid.optim.weight_decay=': "},
        {"[grid]\noptim.weight_decay = 0, 1\n", "sweep.nam=x", "override 'sweep.nam=x': unknown key 'nam'"},
    };
    char sweep[1024], cmd[4096], out[8192];
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char name[32];
        snprintf(name, sizeof name, "bad%zu", i);
        write_sweep(name, cases[i].body, sweep, sizeof sweep);
        snprintf(cmd, sizeof cmd, "./sweep %s %s", sweep, cases[i].args);
        int status = test_run(cmd, out, sizeof out);
        EXPECT(status == 1, "case %zu: status %d: %s", i, status, out);
        EXPECT(strncmp(out, "specdyn: error: ", 16) == 0 && count_occurrences(out, "\n") == 1,
               "case %zu: expected one error line: %s", i, out);
        EXPECT(strstr(out, cases[i].expected) != NULL, "case %zu: '%s' not in: %s", i, cases[i].expected, out);
        char dir[1024];
        snprintf(dir, sizeof dir, "%s/%s-runs", test_tmpdir(), name);
        EXPECT(!test_exists(dir), "case %zu created %s", i, dir);
    }

    /* A missing base config. */
    snprintf(sweep, sizeof sweep, "%s/nobase.ini", test_tmpdir());
    FILE *f = fopen(sweep, "w");
    fprintf(f, "[sweep]\nbase = configs/no_such.ini\nout_dir = %s/nobase-runs\n[grid]\nseeds = 0\n", test_tmpdir());
    fclose(f);
    snprintf(cmd, sizeof cmd, "./sweep %s", sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 1 && strstr(out, "base config 'configs/no_such.ini' not found"), "missing base: %d %s", status, out);
    snprintf(cmd, sizeof cmd, "%s/nobase-runs", test_tmpdir());
    EXPECT(!test_exists(cmd), "missing base created the output directory");
}

/* grid.KEY=LIST replaces a grid list and sweep.name the sweep's name, without
 * passing either to ./train. */
static void sweep_file_overrides(void) {
    char sweep[1024], cmd[4096], out[16384], dir[1024];
    write_sweep("fileover", "[grid]\noptim.weight_decay = 0, 0.1, 1.0\nseeds = 0, 1, 2\n", sweep, sizeof sweep);
    snprintf(cmd, sizeof cmd, "./sweep %s --slurm grid.seeds=5 grid.optim.weight_decay=0.5,2 sweep.name=other " STEPS,
             sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "./sweep --slurm with grid overrides failed: %s", out);
    snprintf(dir, sizeof dir, "%s/fileover-runs/other", test_tmpdir());
    snprintf(cmd, sizeof cmd, "cut -d' ' -f4- %s/tasks.txt", dir);
    test_run(cmd, out, sizeof out);
    EXPECT(strcmp(out, "'run.name=weight_decay_0.5-seed_5' " STEPS_QUOTED " 'optim.weight_decay=0.5' 'run.seed=5' "
                       "'run.threads=2'\n'run.name=weight_decay_2-seed_5' " STEPS_QUOTED " 'optim.weight_decay=2' "
                       "'run.seed=5' 'run.threads=2'\n") == 0,
           "tasks.txt with grid overrides:\n%s", out);
}

static void slurm_script_runs_one_task(void) {
    char sweep[1024], cmd[4096], out[16384], dir[1024], path[2048];
    write_sweep("slurm", "[grid]\noptim.weight_decay = 0, 0.1, 1.0\nseeds = 0, 1\n[slurm]\ntime = 1:00:00\n", sweep,
                sizeof sweep);
    snprintf(dir, sizeof dir, "%s/slurm-runs/slurm", test_tmpdir());
    snprintf(cmd, sizeof cmd, "./sweep %s --slurm " STEPS, sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "./sweep --slurm failed: %s", out);

    snprintf(cmd, sizeof cmd, "bash -n %s/slurm.sh", dir);
    EXPECT(test_run(cmd, out, sizeof out) == 0, "bash -n slurm.sh: %s", out);
    snprintf(cmd, sizeof cmd, "grep -x '#SBATCH --array=0-5' %s/slurm.sh && grep -x '#SBATCH --requeue' %s/slurm.sh && "
                              "grep -x '#SBATCH --time=1:00:00' %s/slurm.sh", dir, dir, dir);
    EXPECT(test_run(cmd, out, sizeof out) == 0, "slurm.sh lacks the array, requeue or time lines");
    snprintf(cmd, sizeof cmd, "wc -l < %s/tasks.txt", dir);
    test_run(cmd, out, sizeof out);
    EXPECT(atoi(out) == 6, "tasks.txt has %d lines, expected 6", atoi(out));
    snprintf(cmd, sizeof cmd, "ls -A %s | tr '\\n' ' '", dir);
    test_run(cmd, out, sizeof out);
    EXPECT(strcmp(out, "slurm.sh sweep.json tasks.txt ") == 0, "--slurm created other files: %s", out);

    /* Array task 4 is weight decay 0.1, seed 1 (seeds change slowest). */
    snprintf(cmd, sizeof cmd, "SLURM_ARRAY_TASK_ID=4 bash %s/slurm.sh", dir);
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "array task 4 failed: %s", out);
    snprintf(path, sizeof path, "%s/weight_decay_0.1-seed_1", dir);
    EXPECT(last_checkpoint(path) == 40, "task 4's run ended at checkpoint %ld", last_checkpoint(path));

    /* A requeued task resumes: the run is complete, so ./train returns at once. */
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0 && strstr(out, "already complete"), "rerun of task 4: %d %s", status, out);

    /* The local runner accepts the run the array task made. */
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 " STEPS " 2>&1 | head -1", sweep);
    test_run(cmd, out, sizeof out);
    EXPECT(strstr(out, "1 complete") != NULL, "local runner after the task: %s", out);
}

/* Start ./sweep with its own process group; SIGKILL the group once run_dir's
 * metrics.csv exists with a row past step 0. Return 0 when killed mid-sweep. */
static int start_and_kill_sweep(const char *sweep, const char *watch_dir) {
    pid_t pid = fork();
    if (pid == 0) {
        setpgid(0, 0);
        if (!freopen("/dev/null", "w", stderr)) _exit(127);
        execl("./sweep", "./sweep", sweep, "--jobs", "2", "train.steps=200", (char *)NULL);
        _exit(127);
    }
    setpgid(pid, pid);
    char path[2100];
    snprintf(path, sizeof path, "%s/metrics.csv", watch_dir);
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
        if (step >= 60) break;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid) return -1;
    }
    kill(-pid, SIGKILL);
    int status;
    waitpid(pid, &status, 0);
    return WIFSIGNALED(status) ? 0 : -1;
}

static void kill_and_rerun_does_missing_work(void) {
    char sweep[1024], cmd[4096], out[16384], dir[1024], watch[2048];
    write_sweep("killed", "[grid]\noptim.weight_decay = 0, 1.0\nseeds = 0, 1\n", sweep, sizeof sweep);
    snprintf(dir, sizeof dir, "%s/killed-runs/killed", test_tmpdir());
    snprintf(watch, sizeof watch, "%s/weight_decay_0-seed_0", dir);
    EXPECT(start_and_kill_sweep(sweep, watch) == 0, "./sweep ended before SIGKILL reached it");
    /* Give the kernel a moment to deliver the children's death signal. */
    struct timespec ts = {0, 200000000};
    nanosleep(&ts, NULL);

    const char *names[] = {"weight_decay_0-seed_0", "weight_decay_1.0-seed_0", "weight_decay_0-seed_1",
                           "weight_decay_1.0-seed_1"};
    long before[4];
    int unfinished = 0;
    for (int i = 0; i < 4; i++) {
        char path[2048];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        before[i] = test_exists(path) ? last_checkpoint(path) : -2;
        unfinished += before[i] < 200;
    }
    EXPECT(unfinished > 0, "every run finished before the kill");

    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 train.steps=200", sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "rerun after SIGKILL failed (%d): %s", status, out);
    for (int i = 0; i < 4; i++) {
        char path[2048], name[600];
        snprintf(path, sizeof path, "%s/%s", dir, names[i]);
        EXPECT(last_checkpoint(path) == 200, "%s ended at %ld", names[i], last_checkpoint(path));
        if (before[i] == 200) {
            snprintf(name, sizeof name, "start  %s", names[i]);
            EXPECT(!strstr(out, name), "finished run %s was started again", names[i]);
            snprintf(name, sizeof name, "resume %s", names[i]);
            EXPECT(!strstr(out, name), "finished run %s was resumed", names[i]);
        } else if (before[i] >= 0) {
            snprintf(name, sizeof name, "resume %s at step %ld", names[i], before[i]);
            EXPECT(strstr(out, name) != NULL, "%s (checkpoint %ld) was not resumed from it: %s", names[i], before[i],
                   out);
        }
    }

    /* The aggregate equals that of the same sweep run without a kill. */
    char straight[1024];
    write_sweep("straight", "[grid]\noptim.weight_decay = 0, 1.0\nseeds = 0, 1\n", straight, sizeof straight);
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 train.steps=200 && ./report %s/straight-runs/straight && ./report %s",
             straight, test_tmpdir(), dir);
    status = test_run(cmd, out, sizeof out);
    EXPECT(status == 0, "uninterrupted sweep or reports failed (%d): %s", status, out);
    snprintf(cmd, sizeof cmd,
             "cd %s && cmp straight-runs/straight/report/sweep_effective_rank.csv killed-runs/killed/report/"
             "sweep_effective_rank.csv && grep -v '\"sweep\":' straight-runs/straight/report/summary.json > s1 && "
             "grep -v '\"sweep\":' killed-runs/killed/report/summary.json > s2 && cmp s1 s2",
             test_tmpdir());
    EXPECT(test_run(cmd, out, sizeof out) == 0, "the killed and rerun sweep aggregates differently: %s", out);
}

static void failing_run_is_reported(void) {
    char sweep[1024], cmd[4096], out[16384];
    /* d_model 32 with 3 heads fails config validation, so every run fails;
     * use a bad value in one grid point instead: lr = 1e30 diverges to NaN. */
    write_sweep("failing", "[grid]\noptim.lr = 3e-3, 1e30\n", sweep, sizeof sweep);
    snprintf(cmd, sizeof cmd, "./sweep %s --jobs 2 " STEPS, sweep);
    int status = test_run(cmd, out, sizeof out);
    EXPECT(status == 1, "a sweep with a failing run should exit 1, got %d: %s", status, out);
    EXPECT(strstr(out, "FAILED lr_1e30-seed_3") && strstr(out, "specdyn: error:"),
           "failure report lacks the run name or its last stderr line: %s", out);
    char path[2048];
    snprintf(path, sizeof path, "%s/failing-runs/failing/lr_3e-3-seed_3", test_tmpdir());
    EXPECT(last_checkpoint(path) == 40, "the other run did not finish: checkpoint %ld", last_checkpoint(path));
}

const TestCase sweep_tests[] = {
    {"sweep local run and rerun", local_sweep_and_rerun},
    {"sweep bad files rejected", bad_sweep_files_rejected},
    {"sweep file overrides", sweep_file_overrides},
    {"sweep slurm script task", slurm_script_runs_one_task},
    {"sweep kill and rerun", kill_and_rerun_does_missing_work},
    {"sweep failing run reported", failing_run_is_reported},
    {NULL, NULL},
};
