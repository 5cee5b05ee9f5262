/* Sweep files, grid expansion, run config checks and the sweep.json
 * manifest; see sweep.h. */
#include "sweep.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <ini.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "error.h"

#define MAX_AXES 32
#define LINE_LEN 1024
#define SEED_KEY "run.seed"

static void set_error(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static char *trim(char *s) {
    while (*s == ' ' || *s == '\t') s++;
    size_t n = strlen(s);
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t' || s[n - 1] == '\r' || s[n - 1] == '\n')) s[--n] = '\0';
    return s;
}

static int path_exists(const char *path) {
    struct stat st;
    return stat(path, &st) == 0;
}

/* ---- reading the sweep file --------------------------------------------------- */

typedef struct {
    Sweep *s;
    FILE *file;
    char *line;              /* getline() buffer */
    size_t line_capacity;
    int lineno;
    int error;               /* 1 after the first error, whose message is in err */
    int seeds_line;          /* line of "seeds" or "run.seed" in [grid], 0 when absent */
    int axis_line[MAX_AXES]; /* line of each grid axis */
    int base_line;
    char *err;
    size_t errlen;
    const char *origin;      /* the command-line override being applied, NULL while reading the file */
} ParseContext;

static void parse_error(ParseContext *ctx, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void parse_error(ParseContext *ctx, const char *fmt, ...) {
    if (ctx->error) return;
    char message[600];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    if (ctx->origin)
        set_error(ctx->err, ctx->errlen, "override '%s': %s", ctx->origin, message);
    else
        set_error(ctx->err, ctx->errlen, "%s:%d: %s", ctx->s->path, ctx->lineno, message);
    ctx->error = 1;
}

/* libinih reader: counts lines and strips indentation, so that an indented
 * line is not taken as a continuation of the previous value. */
static char *read_line(char *str, int num, void *stream) {
    ParseContext *ctx = stream;
    if (ctx->error) return NULL;
    ssize_t len = getline(&ctx->line, &ctx->line_capacity, ctx->file);
    if (len < 0) return NULL;
    ctx->lineno++;
    char *start = ctx->line;
    while (*start == ' ' || *start == '\t') start++;
    size_t n = strlen(start);
    if (n + 1 > (size_t)num) {
        parse_error(ctx, "line is longer than %d bytes", num - 2);
        return NULL;
    }
    /* An unknown section is reported at its header, even when it has no keys. */
    if (start[0] == '[') {
        size_t name_len = strcspn(start + 1, "]");
        static const char *const sections[] = {"sweep", "grid", "slurm"};
        int known = 0;
        for (int i = 0; i < 3; i++) known |= strlen(sections[i]) == name_len && strncmp(start + 1, sections[i], name_len) == 0;
        if (!known) parse_error(ctx, "unknown section [%.*s] (valid sections: [sweep], [grid], [slurm])", (int)name_len, start + 1);
    }
    memcpy(str, start, n + 1);
    return str;
}

static void copy_field(ParseContext *ctx, char *dst, size_t size, const char *section, const char *key,
                       const char *value) {
    if (value[0] == '\0') {
        parse_error(ctx, "[%s] %s is empty", section, key);
        return;
    }
    if (strlen(value) >= size) {
        parse_error(ctx, "[%s] %s is longer than %zu characters", section, key, size - 1);
        return;
    }
    snprintf(dst, size, "%s", value);
}

/* Split a comma-separated list into the axis' values. */
static void parse_values(ParseContext *ctx, SweepAxis *axis, const char *value) {
    char *copy = sd_strdup(value);
    int count = 1;
    for (const char *p = copy; *p; p++) count += *p == ',';
    axis->values = sd_calloc((size_t)count, sizeof(char *));
    char *rest = copy;
    for (int i = 0; i < count; i++) {
        char *comma = strchr(rest, ',');
        if (comma) *comma = '\0';
        char *item = trim(rest);
        if (item[0] == '\0') {
            if (count == 1)
                parse_error(ctx, "[grid] %s has no values; give a comma-separated list", axis->key);
            else
                parse_error(ctx, "[grid] %s: value %d of %d is empty", axis->key, i + 1, count);
            break;
        }
        axis->values[axis->n_values++] = sd_strdup(item);
        rest = comma ? comma + 1 : rest + strlen(rest);
    }
    free(copy);
}

static void parse_grid(ParseContext *ctx, const char *name, char *value) {
    Sweep *s = ctx->s;
    char key[64];
    if (strcmp(name, "seeds") == 0 || strcmp(name, SEED_KEY) == 0) {
        if (ctx->seeds_line && !ctx->origin) {
            parse_error(ctx, "[grid] seeds are set twice (lines %d and %d)", ctx->seeds_line, ctx->lineno);
            return;
        }
        ctx->seeds_line = ctx->lineno;
        snprintf(key, sizeof key, "%s", SEED_KEY);
    } else {
        if (!strchr(name, '.') || strlen(name) >= sizeof key) {
            parse_error(ctx, "[grid] key '%s' is not of the form section.key (for example optim.weight_decay) "
                             "or seeds", name);
            return;
        }
        snprintf(key, sizeof key, "%s", name);
        if (strcmp(key, "run.name") == 0 || strcmp(key, "run.out_dir") == 0 || strcmp(key, "run.threads") == 0) {
            parse_error(ctx, "[grid] %s cannot be a grid key: ./sweep sets it for every run", key);
            return;
        }
    }
    /* '#' starts a comment as in config files (libinih strips ';' comments itself). */
    char *hash = strchr(value, '#');
    if (hash) *hash = '\0';
    for (int a = 0; a < s->n_axes; a++)
        if (strcmp(s->axes[a].key, key) == 0) {
            if (!ctx->origin) {
                parse_error(ctx, "[grid] %s is set twice (lines %d and %d)", key, ctx->axis_line[a], ctx->lineno);
                return;
            }
            /* A command-line grid.KEY=LIST replaces the file's list. */
            SweepAxis *axis = &s->axes[a];
            for (int i = 0; i < axis->n_values; i++) free(axis->values[i]);
            free(axis->values);
            axis->values = NULL;
            axis->n_values = 0;
            parse_values(ctx, axis, value);
            return;
        }
    if (s->n_axes == MAX_AXES) {
        parse_error(ctx, "[grid] has more than %d keys", MAX_AXES);
        return;
    }
    SweepAxis *axis = &s->axes[s->n_axes];
    ctx->axis_line[s->n_axes] = ctx->lineno;
    s->n_axes++;
    snprintf(axis->key, sizeof axis->key, "%s", key);
    parse_values(ctx, axis, value);
}

static int handle_pair(void *user, const char *section, const char *name, const char *raw_value) {
    ParseContext *ctx = user;
    if (ctx->error) return 0;
    Sweep *s = ctx->s;
    char *value = sd_strdup(raw_value);
    char *v = trim(value);
    if (strcmp(section, "sweep") == 0) {
        if (strcmp(name, "base") == 0) {
            copy_field(ctx, s->base, sizeof s->base, section, name, v);
            ctx->base_line = ctx->lineno;
        } else if (strcmp(name, "name") == 0) {
            copy_field(ctx, s->name, sizeof s->name, section, name, v);
        } else if (strcmp(name, "out_dir") == 0) {
            copy_field(ctx, s->out_dir, sizeof s->out_dir, section, name, v);
        } else {
            parse_error(ctx, "unknown key '%s' in [sweep] (valid keys: base, name, out_dir)", name);
        }
    } else if (strcmp(section, "grid") == 0) {
        parse_grid(ctx, name, v);
    } else if (strcmp(section, "slurm") == 0) {
        SlurmOptions *o = &s->slurm;
        if (strcmp(name, "cpus_per_task") == 0) {
            char *end;
            long n = strtol(v, &end, 10);
            if (end == v || *end != '\0' || n < 1 || n > 256)
                parse_error(ctx, "[slurm] cpus_per_task = %s: expected an integer from 1 to 256", v);
            o->cpus_per_task = (int)n;
        } else if (strcmp(name, "time") == 0) {
            copy_field(ctx, o->time, sizeof o->time, section, name, v);
        } else if (strcmp(name, "mem") == 0) {
            copy_field(ctx, o->mem, sizeof o->mem, section, name, v);
        } else if (strcmp(name, "partition") == 0) {
            copy_field(ctx, o->partition, sizeof o->partition, section, name, v);
        } else if (strcmp(name, "account") == 0) {
            copy_field(ctx, o->account, sizeof o->account, section, name, v);
        } else {
            parse_error(ctx, "unknown key '%s' in [slurm] (valid keys: cpus_per_task, time, mem, partition, account)",
                        name);
        }
        /* Values go into "#SBATCH --key=value" lines, where a space or quote would end the option. */
        if (strpbrk(v, " \t'\"\\$`"))
            parse_error(ctx, "[slurm] %s = %s: must not contain spaces, quotes, '$' or backslashes", name, v);
    } else {
        parse_error(ctx, "unknown section [%s] (valid sections: [sweep], [grid], [slurm])", section);
    }
    free(value);
    return !ctx->error;
}

/* Whether a command-line override names a sweep-file line ([sweep], [grid],
 * [slurm]) rather than a config key of every run. */
static int is_sweep_override(const char *assignment) {
    return strncmp(assignment, "sweep.", 6) == 0 || strncmp(assignment, "grid.", 5) == 0 ||
           strncmp(assignment, "slurm.", 6) == 0;
}

/* Apply "section.key=value" overrides of sweep-file lines as if the line were
 * the last one in its section; grid.KEY=LIST replaces KEY's list. */
static void apply_sweep_overrides(ParseContext *ctx, char *const *overrides, int n_overrides) {
    for (int i = 0; i < n_overrides && !ctx->error; i++) {
        if (!is_sweep_override(overrides[i])) continue;
        ctx->origin = overrides[i];
        const char *dot = strchr(overrides[i], '.');
        const char *equals = strchr(overrides[i], '=');
        if (!equals || equals < dot) {
            parse_error(ctx, "expected section.key=value");
            break;
        }
        char section[16], name[LINE_LEN];
        snprintf(section, sizeof section, "%.*s", (int)(dot - overrides[i]), overrides[i]);
        snprintf(name, sizeof name, "%.*s", (int)(equals - dot - 1), dot + 1);
        handle_pair(ctx, section, trim(name), equals + 1);
    }
    ctx->origin = NULL;
}

static int read_sweep_file(Sweep *s, char *const *overrides, int n_overrides, char *err, size_t errlen) {
    FILE *file = fopen(s->path, "r");
    if (!file) {
        set_error(err, errlen, "cannot read sweep file '%s': %s", s->path, strerror(errno));
        return -1;
    }
    ParseContext *ctx = sd_calloc(1, sizeof *ctx);
    ctx->s = s;
    ctx->file = file;
    ctx->err = err;
    ctx->errlen = errlen;
    s->axes = sd_calloc(MAX_AXES + 1, sizeof(SweepAxis));
    int status = ini_parse_stream(read_line, ctx, handle_pair, ctx);
    if (status == 0) apply_sweep_overrides(ctx, overrides, n_overrides);
    int result = -1;
    if (ctx->error) {
        /* The message is already in err. */
    } else if (status > 0) {
        set_error(err, errlen, "%s:%d: syntax error: expected '[section]', 'key = value' or a comment", s->path,
                  status);
    } else if (status < 0) {
        set_error(err, errlen, "cannot parse sweep file '%s': libinih returned %d", s->path, status);
    } else if (s->base[0] == '\0') {
        set_error(err, errlen, "%s: [sweep] base is missing; name the base config, e.g. base = configs/grokking_wd.ini",
                  s->path);
    } else if (!path_exists(s->base)) {
        set_error(err, errlen, "%s:%d: base config '%s' not found (the path is relative to the current directory)",
                  s->path, ctx->base_line, s->base);
    } else {
        result = 0;
    }
    free(ctx->line);
    free(ctx);
    fclose(file);
    return result;
}

/* ---- expanding the grid ------------------------------------------------------- */

/* A grid value as a directory-name part: characters outside [A-Za-z0-9.+_-] become '_'. */
static void name_part(const char *value, char *out, size_t len) {
    size_t i = 0;
    for (; value[i] && i + 1 < len; i++) {
        char c = value[i];
        int ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '.' ||
                 c == '+' || c == '_' || c == '-';
        out[i] = ok ? c : '_';
    }
    out[i] = '\0';
}

/* Set each axis label: the key without its section, or the whole key when
 * two grid keys share a name (task.name and optim.name). */
static void set_labels(Sweep *s) {
    for (int a = 0; a < s->n_axes; a++) {
        const char *key = strchr(s->axes[a].key, '.') + 1;
        int clash = 0;
        for (int b = 0; b < s->n_axes; b++)
            if (b != a && strcmp(strchr(s->axes[b].key, '.') + 1, key) == 0) clash = 1;
        snprintf(s->axes[a].label, sizeof s->axes[a].label, "%s", clash ? s->axes[a].key : key);
    }
}

static int apply_override(Config *cfg, const char *key, const char *value, char *err, size_t errlen) {
    char assignment[LINE_LEN];
    snprintf(assignment, sizeof assignment, "%s=%s", key, value);
    return config_override(cfg, assignment, err, errlen);
}

/* Validate every value of every axis on its own against the base config,
 * and reject two values that resolve to the same setting (0.1 and 0.10). */
static int check_axes(const Sweep *s, const Config *base, char *err, size_t errlen) {
    char detail[LINE_LEN];
    for (int a = 0; a < s->n_axes; a++) {
        const SweepAxis *axis = &s->axes[a];
        Config *resolved = sd_malloc((size_t)axis->n_values * sizeof(Config));
        int rc = 0;
        for (int i = 0; i < axis->n_values && rc == 0; i++) {
            resolved[i] = *base;
            if (apply_override(&resolved[i], axis->key, axis->values[i], detail, sizeof detail) != 0) {
                set_error(err, errlen, "%s: [grid] %s: %s", s->path, axis->key, detail);
                rc = -1;
                break;
            }
            for (int j = 0; j < i; j++)
                if (memcmp(&resolved[i], &resolved[j], sizeof(Config)) == 0) {
                    set_error(err, errlen, "%s: [grid] %s: duplicate value '%s' (the same as '%s')", s->path,
                              axis->key, axis->values[i], axis->values[j]);
                    rc = -1;
                    break;
                }
        }
        free(resolved);
        if (rc != 0) return -1;
    }
    return 0;
}

/* Check a command-line override against the grid and the keys ./sweep sets. */
static int check_override(const Sweep *s, const char *assignment, char *err, size_t errlen) {
    const char *equals = strchr(assignment, '=');
    char key[LINE_LEN];
    snprintf(key, sizeof key, "%.*s", equals ? (int)(equals - assignment) : (int)strlen(assignment), assignment);
    char *k = trim(key);
    if (strcmp(k, "run.name") == 0 || strcmp(k, "run.out_dir") == 0) {
        set_error(err, errlen, "override '%s': ./sweep sets %s for every run; set [sweep] name or out_dir in %s instead",
                  assignment, k, s->path);
        return -1;
    }
    for (int a = 0; a < s->n_axes; a++)
        if (strcmp(s->axes[a].key, k) == 0) {
            set_error(err, errlen, "override '%s': %s is a grid key in %s; change the grid there instead", assignment,
                      k, s->path);
            return -1;
        }
    return 0;
}

static int expand_grid(Sweep *s, const Config *with_overrides, long max_runs, char *err, size_t errlen) {
    long n = 1;
    for (int a = 0; a < s->n_axes; a++) {
        n *= s->axes[a].n_values;
        if (n > max_runs) break;
    }
    if (n > max_runs) {
        long total = 1;
        for (int a = 0; a < s->n_axes; a++) total = total > 1000000000L ? total : total * s->axes[a].n_values;
        set_error(err, errlen, "%s: the grid has %ld%s runs, more than the limit of %ld; pass --force to run it anyway",
                  s->path, total, total > 1000000000L ? "+" : "", max_runs);
        return -1;
    }
    s->n_runs = n;
    s->runs = sd_calloc((size_t)n, sizeof(SweepRun));
    char detail[LINE_LEN];
    for (long r = 0; r < n; r++) {
        SweepRun *run = &s->runs[r];
        run->value_index = sd_calloc((size_t)s->n_axes, sizeof(int));
        /* The last axis (the seed) changes slowest, so run r's grid point is r's digits
         * in the mixed radix of the axis sizes, the first axis fastest. */
        long rest = r;
        for (int a = 0; a < s->n_axes; a++) {
            run->value_index[a] = (int)(rest % s->axes[a].n_values);
            rest /= s->axes[a].n_values;
        }
        run->config = *with_overrides;
        char name[4 * CONFIG_STR] = "";
        for (int a = 0; a < s->n_axes; a++) {
            const SweepAxis *axis = &s->axes[a];
            const char *value = axis->values[run->value_index[a]];
            if (apply_override(&run->config, axis->key, value, detail, sizeof detail) != 0) {
                set_error(err, errlen, "%s: [grid] %s: %s", s->path, axis->key, detail);
                return -1;
            }
            char part[CONFIG_STR];
            name_part(value, part, sizeof part);
            size_t len = strlen(name);
            /* The group is the name before the seed part, which comes last. */
            if (a == s->n_axes - 1) snprintf(run->group, sizeof run->group, "%.*s", (int)(CONFIG_STR - 1), a ? name : "all");
            snprintf(name + len, sizeof name - len, "%s%s_%s", a ? "-" : "", axis->label, part);
        }
        if (strlen(name) >= CONFIG_STR) {
            set_error(err, errlen, "%s: run directory name '%s' is longer than %d characters; use shorter grid values",
                      s->path, name, CONFIG_STR - 1);
            return -1;
        }
        snprintf(run->name, sizeof run->name, "%s", name);
        snprintf(run->config.run_name, sizeof run->config.run_name, "%s", name);
        snprintf(run->config.out_dir, sizeof run->config.out_dir, "%.*s", CONFIG_STR - 1, s->dir);
        run->seed = run->config.seed;
        if (snprintf(run->dir, sizeof run->dir, "%s/%s", s->dir, name) >= (int)sizeof run->dir) {
            set_error(err, errlen, "run directory path '%s/%s' is too long", s->dir, name);
            return -1;
        }
        if (config_validate(&run->config, detail, sizeof detail) != 0) {
            set_error(err, errlen, "%s: run %s: %s", s->path, name, detail);
            return -1;
        }
        /* Different values can map to the same name part ("a b" and "a_b"). */
        for (long q = 0; q < r; q++)
            if (strcmp(s->runs[q].name, name) == 0) {
                set_error(err, errlen, "%s: two grid points give the same run directory name '%s'", s->path, name);
                return -1;
            }
    }
    return 0;
}

int sweep_load(Sweep *s, const char *path, char *const *overrides, int n_overrides, long max_runs, char *err,
               size_t errlen) {
    memset(s, 0, sizeof *s);
    snprintf(s->path, sizeof s->path, "%s", path);
    snprintf(s->out_dir, sizeof s->out_dir, "runs");
    if (read_sweep_file(s, overrides, n_overrides, err, errlen) != 0) goto fail;

    if (s->name[0] == '\0') {
        const char *slash = strrchr(path, '/');
        snprintf(s->name, sizeof s->name, "%s", slash ? slash + 1 : path);
        char *dot = strrchr(s->name, '.');
        if (dot && dot != s->name) *dot = '\0';
    }
    if (strchr(s->name, '/') || strcmp(s->name, ".") == 0 || strcmp(s->name, "..") == 0) {
        set_error(err, errlen, "%s: [sweep] name = %s: must be a single directory name, not a path", path, s->name);
        goto fail;
    }
    size_t out_len = strlen(s->out_dir);
    while (out_len > 1 && s->out_dir[out_len - 1] == '/') s->out_dir[--out_len] = '\0';
    if (snprintf(s->dir, sizeof s->dir, "%s/%s", s->out_dir, s->name) >= CONFIG_STR) {
        set_error(err, errlen, "%s: sweep directory '%s/%s' is longer than %d characters, the limit of run.out_dir",
                  path, s->out_dir, s->name, CONFIG_STR - 1);
        goto fail;
    }

    /* Without a seeds line the grid still ends in a one-value seed axis, so
     * every run name ends in seed_S and the report can group uniformly. */
    Config base;
    config_defaults(&base);
    if (config_load(&base, s->base, err, errlen) != 0) goto fail;
    int seed_axis = -1;
    for (int a = 0; a < s->n_axes; a++)
        if (strcmp(s->axes[a].key, SEED_KEY) == 0) seed_axis = a;
    if (seed_axis < 0) {
        SweepAxis *axis = &s->axes[s->n_axes++];
        snprintf(axis->key, sizeof axis->key, SEED_KEY);
        axis->values = sd_calloc(1, sizeof(char *));
        char seed[32];
        snprintf(seed, sizeof seed, "%ld", base.seed);
        axis->values[axis->n_values++] = sd_strdup(seed);
    } else if (seed_axis != s->n_axes - 1) {
        SweepAxis seeds = s->axes[seed_axis];
        memmove(&s->axes[seed_axis], &s->axes[seed_axis + 1], (size_t)(s->n_axes - 1 - seed_axis) * sizeof(SweepAxis));
        s->axes[s->n_axes - 1] = seeds;
    }
    set_labels(s);

    if (check_axes(s, &base, err, errlen) != 0) goto fail;
    Config with_overrides = base;
    s->overrides = sd_calloc((size_t)(n_overrides > 0 ? n_overrides : 1), sizeof(char *));
    s->sweep_overrides = sd_calloc((size_t)(n_overrides > 0 ? n_overrides : 1), sizeof(char *));
    for (int i = 0; i < n_overrides; i++) {
        if (is_sweep_override(overrides[i])) {
            s->sweep_overrides[s->n_sweep_overrides++] = sd_strdup(overrides[i]);
            continue;
        }
        if (check_override(s, overrides[i], err, errlen) != 0) goto fail;
        if (config_override(&with_overrides, overrides[i], err, errlen) != 0) goto fail;
        s->overrides[s->n_overrides++] = sd_strdup(overrides[i]);
    }
    if (expand_grid(s, &with_overrides, max_runs, err, errlen) != 0) goto fail;
    if (s->slurm.cpus_per_task == 0) s->slurm.cpus_per_task = with_overrides.threads;
    return 0;

fail:
    sweep_free(s);
    return -1;
}

void sweep_free(Sweep *s) {
    for (int a = 0; s->axes && a < s->n_axes; a++) {
        for (int i = 0; i < s->axes[a].n_values; i++) free(s->axes[a].values[i]);
        free(s->axes[a].values);
    }
    free(s->axes);
    for (int i = 0; i < s->n_overrides; i++) free(s->overrides[i]);
    free(s->overrides);
    for (int i = 0; i < s->n_sweep_overrides; i++) free(s->sweep_overrides[i]);
    free(s->sweep_overrides);
    for (long r = 0; s->runs && r < s->n_runs; r++) free(s->runs[r].value_index);
    free(s->runs);
    memset(s, 0, sizeof *s);
}

int sweep_run_arguments(const Sweep *s, const SweepRun *run, char **args, int max_args) {
    int n = 0;
    char buf[SWEEP_PATH + 64];
    CHECK(max_args >= 2 + s->n_overrides + s->n_axes, "%d arguments do not fit in %d", 2 + s->n_overrides + s->n_axes,
          max_args);
    snprintf(buf, sizeof buf, "run.out_dir=%s", s->dir);
    args[n++] = sd_strdup(buf);
    snprintf(buf, sizeof buf, "run.name=%s", run->name);
    args[n++] = sd_strdup(buf);
    for (int i = 0; i < s->n_overrides; i++) args[n++] = sd_strdup(s->overrides[i]);
    for (int a = 0; a < s->n_axes; a++) {
        snprintf(buf, sizeof buf, "%s=%s", s->axes[a].key, s->axes[a].values[run->value_index[a]]);
        args[n++] = sd_strdup(buf);
    }
    return n;
}

/* ---- checking an existing run -------------------------------------------------- */

/* The "section.key = value" lines of a config written by config_write(). */
typedef struct {
    int n;
    char key[128][80];
    char value[128][400];
} ConfigLines;

static int config_lines(const Config *cfg, const char *tmp_dir, ConfigLines *out, char *err, size_t errlen) {
    char path[SWEEP_PATH];
    snprintf(path, sizeof path, "%s/config.ini", tmp_dir);
    if (config_write(cfg, path, err, errlen) != 0) return -1;
    FILE *f = sd_fopen(path, "r");
    char line[LINE_LEN], section[64] = "";
    out->n = 0;
    while (fgets(line, sizeof line, f) && out->n < 128) {
        char *t = trim(line);
        if (t[0] == '[') {
            snprintf(section, sizeof section, "%.*s", (int)strcspn(t + 1, "]"), t + 1);
            continue;
        }
        char *equals = strchr(t, '=');
        if (t[0] == ';' || !equals) continue;
        *equals = '\0';
        snprintf(out->key[out->n], sizeof out->key[0], "%s.%s", section, trim(t));
        snprintf(out->value[out->n], sizeof out->value[0], "%s", trim(equals + 1));
        out->n++;
    }
    fclose(f);
    unlink(path);
    return 0;
}

int sweep_check_run_config(const Sweep *s, const SweepRun *run, Config *existing_out, char *err, size_t errlen) {
    char path[SWEEP_PATH + 16];
    snprintf(path, sizeof path, "%s/config.ini", run->dir);
    if (!path_exists(path)) return 1;
    Config existing;
    config_defaults(&existing);
    if (config_load(&existing, path, err, errlen) != 0) return -1;

    /* Both configs go through config_write() so that equal values compare equal as text. */
    char tmp_dir[] = "/tmp/specdyn-sweep-XXXXXX";
    if (!mkdtemp(tmp_dir)) {
        set_error(err, errlen, "cannot create a temporary directory: %s", strerror(errno));
        return -1;
    }
    ConfigLines *have = sd_malloc(sizeof *have), *want = sd_malloc(sizeof *want);
    int rc = config_lines(&existing, tmp_dir, have, err, errlen);
    if (rc == 0) rc = config_lines(&run->config, tmp_dir, want, err, errlen);
    rmdir(tmp_dir);
    for (int i = 0; rc == 0 && i < want->n; i++) {
        const char *key = want->key[i];
        if (strcmp(key, "run.name") == 0 || strcmp(key, "run.out_dir") == 0 || strcmp(key, "run.threads") == 0)
            continue;
        for (int j = 0; j < have->n; j++) {
            if (strcmp(have->key[j], key) != 0 || strcmp(have->value[j], want->value[i]) == 0) continue;
            set_error(err, errlen,
                      "run %s has %s = %s in its config.ini, but this sweep command gives %s = %s; rerun with the "
                      "overrides the run was made with (listed in %s/sweep.json), or choose another [sweep] name",
                      run->dir, key, have->value[j], key, want->value[i], s->dir);
            rc = -1;
            break;
        }
    }
    free(have);
    free(want);
    if (rc == 0 && existing_out) *existing_out = existing;
    return rc;
}

long sweep_latest_checkpoint(const char *dir) {
    char path[SWEEP_PATH + 16];
    snprintf(path, sizeof path, "%s/checkpoints", dir);
    DIR *d = opendir(path);
    if (!d) return -1;
    long latest = -1;
    struct dirent *ent;
    while ((ent = readdir(d))) {
        long step;
        char tail[32];
        /* Checkpoints are renamed into place, so a listed file is complete. */
        if (sscanf(ent->d_name, "step_%ld.safetensor%31s", &step, tail) == 2 && strcmp(tail, "s") == 0 &&
            step > latest)
            latest = step;
    }
    closedir(d);
    return latest;
}

/* ---- the manifest ----------------------------------------------------------------- */

int sweep_write_manifest(const Sweep *s, char *err, size_t errlen) {
    if (sd_make_dirs(s->dir, err, errlen) != 0) return -1;
    cJSON *root = cJSON_CreateObject();
    cJSON_AddStringToObject(root, "format", "specdyn-sweep");
    cJSON_AddNumberToObject(root, "version", 1);
    cJSON_AddStringToObject(root, "name", s->name);
    cJSON_AddStringToObject(root, "sweep_file", s->path);
    cJSON_AddStringToObject(root, "base", s->base);
    cJSON *overrides = cJSON_AddArrayToObject(root, "overrides");
    for (int i = 0; i < s->n_overrides; i++) cJSON_AddItemToArray(overrides, cJSON_CreateString(s->overrides[i]));
    cJSON *file_overrides = cJSON_AddArrayToObject(root, "sweep_file_overrides");
    for (int i = 0; i < s->n_sweep_overrides; i++)
        cJSON_AddItemToArray(file_overrides, cJSON_CreateString(s->sweep_overrides[i]));
    cJSON *grid = cJSON_AddArrayToObject(root, "grid");
    for (int a = 0; a < s->n_axes; a++) {
        cJSON *axis = cJSON_CreateObject();
        cJSON_AddStringToObject(axis, "key", s->axes[a].key);
        cJSON *values = cJSON_AddArrayToObject(axis, "values");
        for (int i = 0; i < s->axes[a].n_values; i++) cJSON_AddItemToArray(values, cJSON_CreateString(s->axes[a].values[i]));
        cJSON_AddItemToArray(grid, axis);
    }
    cJSON *runs = cJSON_AddArrayToObject(root, "runs");
    for (long r = 0; r < s->n_runs; r++) {
        const SweepRun *run = &s->runs[r];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "name", run->name);
        cJSON_AddStringToObject(o, "group", run->group);
        cJSON_AddNumberToObject(o, "seed", (double)run->seed);
        cJSON *values = cJSON_AddObjectToObject(o, "values");
        for (int a = 0; a < s->n_axes; a++)
            cJSON_AddStringToObject(values, s->axes[a].key, s->axes[a].values[run->value_index[a]]);
        cJSON_AddItemToArray(runs, o);
    }
    char *text = cJSON_Print(root);
    cJSON_Delete(root);

    char path[SWEEP_PATH + 32], tmp[SWEEP_PATH + 32];
    snprintf(path, sizeof path, "%s/sweep.json", s->dir);
    snprintf(tmp, sizeof tmp, "%s/sweep.json.tmp", s->dir);
    FILE *f = fopen(tmp, "w");
    int ok = f && text && fputs(text, f) >= 0 && fputc('\n', f) != EOF;
    if (f && fclose(f) != 0) ok = 0;
    free(text);
    if (!ok || rename(tmp, path) != 0) {
        set_error(err, errlen, "writing '%s' failed: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static char *json_string(const cJSON *o, const char *key) {
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(item) ? sd_strdup(item->valuestring) : NULL;
}

int sweep_manifest_read(const char *dir, SweepManifest *m, char *err, size_t errlen) {
    memset(m, 0, sizeof *m);
    char path[SWEEP_PATH + 32];
    snprintf(path, sizeof path, "%s/sweep.json", dir);
    FILE *f = fopen(path, "r");
    if (!f) return 1;
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = sd_malloc((size_t)size + 1);
    size_t got = fread(text, 1, (size_t)size, f);
    text[got] = '\0';
    fclose(f);
    cJSON *root = cJSON_Parse(text);
    free(text);

    const cJSON *format = cJSON_GetObjectItemCaseSensitive(root, "format");
    const cJSON *grid = cJSON_GetObjectItemCaseSensitive(root, "grid");
    const cJSON *runs = cJSON_GetObjectItemCaseSensitive(root, "runs");
    if (!root || !cJSON_IsString(format) || strcmp(format->valuestring, "specdyn-sweep") != 0 ||
        !cJSON_IsArray(grid) || !cJSON_IsArray(runs)) {
        set_error(err, errlen, "'%s' is not a sweep manifest written by ./sweep (expected format \"specdyn-sweep\" "
                               "with \"grid\" and \"runs\")", path);
        cJSON_Delete(root);
        return -1;
    }
    m->name = json_string(root, "name");
    int n_grid = cJSON_GetArraySize(grid);
    m->keys = sd_calloc((size_t)(n_grid > 0 ? n_grid : 1), sizeof(char *));
    const cJSON *axis;
    cJSON_ArrayForEach(axis, grid) {
        char *key = json_string(axis, "key");
        if (key && strcmp(key, SEED_KEY) != 0)
            m->keys[m->n_keys++] = key;
        else
            free(key);
    }
    int n_runs = cJSON_GetArraySize(runs);
    m->runs = sd_calloc((size_t)(n_runs > 0 ? n_runs : 1), sizeof(ManifestRun));
    const cJSON *item;
    int rc = 0;
    cJSON_ArrayForEach(item, runs) {
        ManifestRun *run = &m->runs[m->n_runs++];
        run->name = json_string(item, "name");
        run->group = json_string(item, "group");
        const cJSON *seed = cJSON_GetObjectItemCaseSensitive(item, "seed");
        const cJSON *values = cJSON_GetObjectItemCaseSensitive(item, "values");
        run->values = sd_calloc((size_t)(m->n_keys > 0 ? m->n_keys : 1), sizeof(char *));
        for (int k = 0; k < m->n_keys; k++) run->values[k] = json_string(values, m->keys[k]);
        int complete = run->name && run->group && cJSON_IsNumber(seed);
        for (int k = 0; k < m->n_keys; k++) complete = complete && run->values[k];
        if (!complete || strchr(run->name, '/')) {
            set_error(err, errlen, "'%s': run %d lacks a name, group, seed or grid value", path, m->n_runs);
            rc = -1;
            break;
        }
        run->seed = (long)seed->valuedouble;
    }
    cJSON_Delete(root);
    if (rc != 0) sweep_manifest_free(m);
    return rc;
}

void sweep_manifest_free(SweepManifest *m) {
    for (int r = 0; r < m->n_runs; r++) {
        free(m->runs[r].name);
        free(m->runs[r].group);
        for (int k = 0; k < m->n_keys; k++) free(m->runs[r].values[k]);
        free(m->runs[r].values);
    }
    free(m->runs);
    for (int k = 0; k < m->n_keys; k++) free(m->keys[k]);
    free(m->keys);
    free(m->name);
    memset(m, 0, sizeof *m);
}
