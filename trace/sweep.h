/* Sweeps: a grid of runs described by a sweep file, and the manifest
 * (sweep.json) that ./sweep writes and ./report reads.
 *
 * A sweep file is an INI file:
 *
 *   [sweep]
 *   base = configs/grokking_wd.ini    ; base config, relative to the current directory
 *   name = grokking_wd                ; default: the sweep file's base name
 *   out_dir = runs                    ; runs go to out_dir/name/RUN
 *
 *   [grid]
 *   optim.weight_decay = 0, 0.1, 1.0  ; any config key, comma-separated values
 *   seeds = 0, 1, 2                   ; run.seed; default: the base config's seed
 *
 *   [slurm]                           ; optional, for ./sweep --slurm
 *   cpus_per_task = 2                 ; also run.threads of every run
 *   time = 24:00:00
 *   mem = 4G
 *   partition = gpu
 *   account = project
 *
 * The grid is the cartesian product of its lines. Each run's directory name
 * joins "key_value" for every grid line in file order, then "seed_S", with
 * '-' (for example weight_decay_0.1-seed_2); the key drops its section unless
 * two grid keys share a name. A value cannot contain a comma, so list-valued
 * keys (schedule.milestones, trace.layers with several globs) belong in the
 * base config. Runs are ordered with the seed changing slowest, so the first
 * runs of a sweep cover every other grid point once. */
#ifndef SD_SWEEP_H
#define SD_SWEEP_H

#include <stddef.h>

#include "config.h"

/* Grids larger than this need --force. */
#define SWEEP_MAX_RUNS 1000

#define SWEEP_PATH 4096

/* One [grid] line. The seed line is always present and always last. */
typedef struct {
    char key[64];        /* "section.key"; "run.seed" for the seeds line */
    char label[64];      /* name part in run directory names: "weight_decay", "seed" */
    int n_values;
    char **values;       /* [n_values] as written, trimmed */
} SweepAxis;

typedef struct {
    char name[CONFIG_STR];     /* run directory name under the sweep directory */
    char group[CONFIG_STR];    /* name without its "-seed_S" part: runs that differ only by seed share it */
    char dir[SWEEP_PATH];      /* sweep directory/name */
    int *value_index;          /* [n_axes] index into each axis' values */
    long seed;
    Config config;             /* resolved config except run.threads */
} SweepRun;

typedef struct {
    int cpus_per_task;         /* 0 when unset: the base config's run.threads */
    char time[64], mem[64], partition[64], account[64];
} SlurmOptions;

typedef struct {
    char path[SWEEP_PATH];     /* the sweep file */
    char base[SWEEP_PATH];     /* base config path as written */
    char name[CONFIG_STR];
    char out_dir[SWEEP_PATH];
    char dir[SWEEP_PATH];      /* out_dir/name */
    int n_axes;
    SweepAxis *axes;           /* [n_axes]; the last one is run.seed */
    int n_overrides;
    char **overrides;          /* [n_overrides] command-line "section.key=value", applied to every run */
    int n_sweep_overrides;
    char **sweep_overrides;    /* [n_sweep_overrides] command-line sweep.KEY, grid.KEY or slurm.KEY lines */
    long n_runs;
    SweepRun *runs;            /* [n_runs] */
    SlurmOptions slurm;
} Sweep;

/* Read the sweep file at path, apply the command-line overrides (sweep.KEY,
 * grid.KEY=LIST and slurm.KEY change the sweep file's lines; any other
 * section.key=value applies to every run's config), expand and
 * validate the grid. Every grid value is applied to the base config with
 * config_override(), so an unknown key or invalid value fails as it would on
 * ./train's command line. A grid of more than max_runs runs is an error.
 * Return 0, or -1 with one line in err (naming the file and line where there
 * is one); on failure s owns nothing to free. Creates no file. */
int sweep_load(Sweep *s, const char *path, char *const *overrides, int n_overrides, long max_runs, char *err,
               size_t errlen);

/* Free everything sweep_load() allocated; a zeroed Sweep is allowed. */
void sweep_free(Sweep *s);

/* Return the config.ini arguments of run as ./train overrides into args
 * [max_args]: run.out_dir, run.name, the command-line overrides, then the
 * grid values. Strings are allocated; free them with free(). Returns the
 * count. */
int sweep_run_arguments(const Sweep *s, const SweepRun *run, char **args, int max_args);

/* Compare run->dir/config.ini with the config this sweep gives the run,
 * ignoring run.name, run.out_dir and run.threads (where a run lives and how
 * many threads it used do not change what it trains). Return 0 when they
 * match, with the run's config in *existing_out unless it is NULL; 1 when
 * run->dir has no config.ini; -1 with a message naming the run and the
 * first differing key. */
int sweep_check_run_config(const Sweep *s, const SweepRun *run, Config *existing_out, char *err, size_t errlen);

/* Return the step of the newest checkpoint of the run directory dir, or -1
 * when it has none. */
long sweep_latest_checkpoint(const char *dir);

/* Write s->dir/sweep.json (atomically), creating s->dir if needed. Return 0,
 * or -1 with a message. */
int sweep_write_manifest(const Sweep *s, char *err, size_t errlen);

/* ---- the manifest, as ./report reads it ----------------------------------- */

typedef struct {
    char *name;          /* run directory name */
    char *group;         /* runs that differ only by seed share it */
    long seed;
    char **values;       /* [n_keys] grid values as written */
} ManifestRun;

typedef struct {
    char *name;          /* the sweep's name */
    int n_keys;
    char **keys;         /* [n_keys] grid keys without run.seed, in file order */
    int n_runs;
    ManifestRun *runs;   /* [n_runs] */
} SweepManifest;

/* Read dir/sweep.json. Return 0, 1 when dir has no sweep.json, or -1 with a
 * message when it is malformed. On a return other than 0, m holds nothing to
 * free. */
int sweep_manifest_read(const char *dir, SweepManifest *m, char *err, size_t errlen);

/* Free everything sweep_manifest_read() allocated; a zeroed manifest is allowed. */
void sweep_manifest_free(SweepManifest *m);

#endif
