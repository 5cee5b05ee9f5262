/* Run configuration: the schema table, INI loading through libinih, overrides,
 * validation and writing. See config.h for the contract. */
#include "config.h"

#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#include "error.h"

/* ---------------------------------------------------------------------------
 * Schema
 * ------------------------------------------------------------------------- */

typedef enum {
    TYPE_INT,       /* int field */
    TYPE_LONG,      /* long field */
    TYPE_DOUBLE,    /* double field */
    TYPE_BOOL,      /* int field holding 0 or 1 */
    TYPE_STRING,    /* char[CONFIG_STR] field */
    TYPE_ENUM,      /* char[CONFIG_STR] field holding one of KeySpec.words */
    TYPE_LONG_LIST, /* long[CONFIG_MAX_MILESTONES] field plus an int count field */
} KeyType;

typedef enum { BOUND_NONE, BOUND_INCLUSIVE, BOUND_EXCLUSIVE } BoundKind;

/* One configuration key. Numeric bounds apply to int, long and double keys
 * and to every item of a list. */
typedef struct {
    const char *section;
    const char *key;
    KeyType type;
    size_t offset;             /* offsetof(Config, field) */
    size_t count_offset;       /* TYPE_LONG_LIST: offsetof the item count */
    const char *default_text;  /* parsed like a value from a file */
    BoundKind min_kind;
    double min;
    BoundKind max_kind;
    double max;
    const char *const *words;  /* TYPE_ENUM: allowed words, NULL-terminated */
    const char *help;          /* one line, written as a comment by config_write() */
} KeySpec;

#define FIELD(name) offsetof(Config, name), 0
#define LIST_FIELD(name, count) offsetof(Config, name), offsetof(Config, count)
#define NO_MIN BOUND_NONE, 0
#define NO_MAX BOUND_NONE, 0
#define MIN_INCL(x) BOUND_INCLUSIVE, (x)
#define MIN_EXCL(x) BOUND_EXCLUSIVE, (x)
#define MAX_INCL(x) BOUND_INCLUSIVE, (x)
#define MAX_EXCL(x) BOUND_EXCLUSIVE, (x)

static const char *const TASK_WORDS[] = {"modular", "images", NULL};
static const char *const DATASET_WORDS[] = {"fashion_mnist", "mnist", "cifar10", "cifar100", "folder", NULL};
static const char *const OP_WORDS[] = {"add", "sub", "mul", NULL};
static const char *const ARCH_WORDS[] = {"transformer", "mlp", "lenet", "vgg11", "vgg13",
                                         "vgg16", "vgg19", "resnet20", NULL};
static const char *const POSITIONAL_WORDS[] = {"sinusoidal", "learned", NULL};
static const char *const ACTIVATION_WORDS[] = {"relu", "gelu", NULL};
static const char *const OPTIMIZER_WORDS[] = {"sgd", "adam", "adamw", NULL};
static const char *const DECAY_WORDS[] = {"all", "matrices", NULL};
static const char *const SCHEDULE_WORDS[] = {"constant", "warmup", "multistep", "cosine",
                                             "warmup_cosine", NULL};

static const KeySpec SCHEMA[] = {
    {"run", "name", TYPE_STRING, FIELD(run_name), "", NO_MIN, NO_MAX, NULL,
     "run directory name under out_dir; empty: the caller uses the config file's base name"},
    {"run", "out_dir", TYPE_STRING, FIELD(out_dir), "runs", NO_MIN, NO_MAX, NULL,
     "parent directory of run directories"},
    {"run", "seed", TYPE_LONG, FIELD(seed), "0", MIN_INCL(0), NO_MAX, NULL,
     "random seed"},
    {"run", "threads", TYPE_INT, FIELD(threads), "2", MIN_INCL(1), MAX_INCL(256), NULL,
     "OpenMP and OpenBLAS threads"},

    {"task", "name", TYPE_ENUM, FIELD(task), "modular", NO_MIN, NO_MAX, TASK_WORDS,
     "task: modular arithmetic or images (image classification)"},
    {"task", "p", TYPE_INT, FIELD(p), "113", MIN_INCL(3), MAX_INCL(1000), NULL,
     "modulus"},
    {"task", "op", TYPE_ENUM, FIELD(op), "add", NO_MIN, NO_MAX, OP_WORDS,
     "operation: add, sub or mul"},
    {"task", "train_frac", TYPE_DOUBLE, FIELD(train_frac), "0.3", MIN_EXCL(0), MAX_EXCL(1), NULL,
     "fraction of all pairs used for training"},
    {"task", "dataset", TYPE_ENUM, FIELD(dataset), "fashion_mnist", NO_MIN, NO_MAX, DATASET_WORDS,
     "images: fashion_mnist, mnist (IDX files), cifar10, cifar100 (binary batches) or folder"},
    {"task", "path", TYPE_STRING, FIELD(data_path), "", NO_MIN, NO_MAX, NULL,
     "images: data directory; empty: /usr/share/datasets/fashion-mnist for fashion_mnist"},
    {"task", "image_size", TYPE_INT, FIELD(image_size), "0", MIN_INCL(0), MAX_INCL(1024), NULL,
     "images: side in pixels after resizing; 0 keeps the stored size (folder needs a size)"},
    {"task", "augment", TYPE_BOOL, FIELD(augment), "false", NO_MIN, NO_MAX, NULL,
     "images: random crop with padding image_size/8 and horizontal flip of training images"},
    {"task", "random_labels", TYPE_BOOL, FIELD(random_labels), "false", NO_MIN, NO_MAX, NULL,
     "images: replace every training label by a uniformly random one, fixed by the seed"},
    {"task", "label_noise", TYPE_DOUBLE, FIELD(label_noise), "0", MIN_INCL(0), MAX_INCL(1), NULL,
     "images: probability that a training label is redrawn uniformly at random"},
    {"task", "train_subset", TYPE_LONG, FIELD(train_subset), "0", MIN_INCL(0), NO_MAX, NULL,
     "images: number of training examples kept, a seeded sample; 0 keeps all"},

    {"model", "arch", TYPE_ENUM, FIELD(arch), "transformer", NO_MIN, NO_MAX, ARCH_WORDS,
     "architecture: transformer, mlp, or for images lenet, vgg11, vgg13, vgg16, vgg19, resnet20"},
    {"model", "d_model", TYPE_INT, FIELD(d_model), "128", MIN_INCL(1), NO_MAX, NULL,
     "transformer width"},
    {"model", "n_heads", TYPE_INT, FIELD(n_heads), "4", MIN_INCL(1), NO_MAX, NULL,
     "attention heads; must divide d_model"},
    {"model", "d_mlp", TYPE_INT, FIELD(d_mlp), "512", MIN_INCL(1), NO_MAX, NULL,
     "transformer MLP width"},
    {"model", "n_layers", TYPE_INT, FIELD(n_layers), "1", MIN_INCL(1), NO_MAX, NULL,
     "transformer blocks"},
    {"model", "layernorm", TYPE_BOOL, FIELD(layernorm), "false", NO_MIN, NO_MAX, NULL,
     "LayerNorm before attention and MLP (pre-LN blocks)"},
    {"model", "positional", TYPE_ENUM, FIELD(positional), "sinusoidal", NO_MIN, NO_MAX,
     POSITIONAL_WORDS, "positional embedding: sinusoidal or learned"},
    {"model", "activation", TYPE_ENUM, FIELD(activation), "relu", NO_MIN, NO_MAX,
     ACTIVATION_WORDS, "MLP activation: relu or gelu"},
    {"model", "hidden", TYPE_INT, FIELD(hidden), "100", MIN_INCL(1), NO_MAX, NULL,
     "MLP architecture: hidden width"},
    {"model", "depth", TYPE_INT, FIELD(depth), "4", MIN_INCL(1), NO_MAX, NULL,
     "MLP architecture: hidden layers"},
    {"model", "width", TYPE_DOUBLE, FIELD(width), "1", MIN_EXCL(0), MAX_INCL(64), NULL,
     "image classifiers: channel multiplier"},
    {"model", "dropout", TYPE_DOUBLE, FIELD(dropout), "0", MIN_INCL(0), MAX_EXCL(1), NULL,
     "lenet, vgg and resnet20: dropout probability before the last linear layer"},

    {"optim", "name", TYPE_ENUM, FIELD(optimizer), "adamw", NO_MIN, NO_MAX, OPTIMIZER_WORDS,
     "optimiser: sgd, adam or adamw"},
    {"optim", "lr", TYPE_DOUBLE, FIELD(lr), "1e-3", MIN_INCL(0), NO_MAX, NULL,
     "base learning rate"},
    {"optim", "beta1", TYPE_DOUBLE, FIELD(beta1), "0.9", MIN_INCL(0), MAX_EXCL(1), NULL,
     "Adam first-moment decay"},
    {"optim", "beta2", TYPE_DOUBLE, FIELD(beta2), "0.98", MIN_INCL(0), MAX_EXCL(1), NULL,
     "Adam second-moment decay"},
    {"optim", "eps", TYPE_DOUBLE, FIELD(eps), "1e-8", MIN_EXCL(0), NO_MAX, NULL,
     "Adam denominator epsilon"},
    {"optim", "weight_decay", TYPE_DOUBLE, FIELD(weight_decay), "1.0", MIN_INCL(0), NO_MAX, NULL,
     "weight decay coefficient (decoupled for adamw)"},
    {"optim", "momentum", TYPE_DOUBLE, FIELD(momentum), "0.0", MIN_INCL(0), MAX_EXCL(1), NULL,
     "SGD momentum"},
    {"optim", "nesterov", TYPE_BOOL, FIELD(nesterov), "false", NO_MIN, NO_MAX, NULL,
     "SGD Nesterov momentum"},
    {"optim", "decay", TYPE_ENUM, FIELD(decay), "all", NO_MIN, NO_MAX, DECAY_WORDS,
     "parameters that weight decay applies to: all or matrices"},
    {"optim", "clip", TYPE_DOUBLE, FIELD(clip), "0", MIN_INCL(0), NO_MAX, NULL,
     "global gradient-norm clip; 0 disables"},

    {"schedule", "name", TYPE_ENUM, FIELD(schedule), "constant", NO_MIN, NO_MAX, SCHEDULE_WORDS,
     "learning-rate schedule: constant, warmup, multistep, cosine or warmup_cosine"},
    {"schedule", "warmup", TYPE_LONG, FIELD(warmup), "0", MIN_INCL(0), NO_MAX, NULL,
     "linear warm-up steps"},
    {"schedule", "milestones", TYPE_LONG_LIST, LIST_FIELD(milestones, n_milestones), "",
     MIN_INCL(1), NO_MAX, NULL,
     "multistep: comma-separated steps where lr is multiplied by gamma"},
    {"schedule", "gamma", TYPE_DOUBLE, FIELD(gamma), "0.1", MIN_EXCL(0), NO_MAX, NULL,
     "multistep factor"},
    {"schedule", "min_factor", TYPE_DOUBLE, FIELD(min_factor), "0.0", MIN_INCL(0), MAX_INCL(1),
     NULL, "cosine: final lr as a fraction of lr"},

    {"train", "steps", TYPE_LONG, FIELD(steps), "40000", MIN_INCL(1), NO_MAX, NULL,
     "optimiser steps"},
    {"train", "batch_size", TYPE_LONG, FIELD(batch_size), "16384", MIN_INCL(1), NO_MAX, NULL,
     "examples per optimiser step; at least the training set size means full batch"},
    {"train", "accumulate", TYPE_INT, FIELD(accumulate), "1", MIN_INCL(1), NO_MAX, NULL,
     "micro-batches per optimiser step"},
    {"train", "eval_every", TYPE_LONG, FIELD(eval_every), "100", MIN_INCL(1), NO_MAX, NULL,
     "steps between evaluations"},
    {"train", "checkpoint_every", TYPE_LONG, FIELD(checkpoint_every), "1000", MIN_INCL(1), NO_MAX,
     NULL, "steps between checkpoints"},
    {"train", "keep_checkpoints", TYPE_INT, FIELD(keep_checkpoints), "3", MIN_INCL(1), NO_MAX,
     NULL, "checkpoints kept on disk"},
    {"train", "log_every", TYPE_LONG, FIELD(log_every), "100", MIN_INCL(1), NO_MAX, NULL,
     "steps between progress lines when stderr is not a terminal"},

    {"trace", "every", TYPE_LONG, FIELD(trace_every), "100", MIN_INCL(0), NO_MAX, NULL,
     "steps between SVD snapshots; 0 disables tracing"},
    {"trace", "vectors", TYPE_INT, FIELD(trace_vectors), "8", MIN_INCL(0), NO_MAX, NULL,
     "top singular vectors stored per matrix"},
    {"trace", "layers", TYPE_STRING, FIELD(trace_layers), "*", NO_MIN, NO_MAX, NULL,
     "comma-separated name globs of traced matrices"},
    {"trace", "prune", TYPE_DOUBLE, FIELD(trace_prune), "0", MIN_INCL(0), MAX_EXCL(1), NULL,
     "low-rank evaluation fraction; 0 disables"},
};

#define N_KEYS (sizeof SCHEMA / sizeof SCHEMA[0])

/* ---------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------- */

static void set_error(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_error(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static void *field_ptr(Config *cfg, const KeySpec *spec) { return (char *)cfg + spec->offset; }

static const void *field_cptr(const Config *cfg, const KeySpec *spec) {
    return (const char *)cfg + spec->offset;
}

static char *trim(char *s) {
    while (isspace((unsigned char)*s)) s++;
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
    return s;
}

/* Cuts s at the first '#' that starts s or follows whitespace, then trims the
 * end. libinih 55 already removes ';' comments the same way but keeps '#'. */
static void strip_hash_comment(char *s) {
    for (char *c = s; *c; c++) {
        if (*c == '#' && (c == s || isspace((unsigned char)c[-1]))) {
            *c = '\0';
            break;
        }
    }
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1])) s[--n] = '\0';
}

/* Prints the shortest "%.Ng" form of x that strtod reads back bit-identically. */
static void format_double(double x, char *buf, size_t n) {
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, n, "%.*g", precision, x);
        double back = strtod(buf, NULL);
        if (memcmp(&back, &x, sizeof x) == 0) return;
    }
    snprintf(buf, n, "%.17g", x);
}

/* ---------------------------------------------------------------------------
 * Name lookup and suggestions
 * ------------------------------------------------------------------------- */

static int find_key(const char *section, const char *key) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(SCHEMA[i].section, section) == 0 && strcmp(SCHEMA[i].key, key) == 0)
            return (int)i;
    return -1;
}

static int section_known(const char *section) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(SCHEMA[i].section, section) == 0) return 1;
    return 0;
}

/* Case-insensitive Levenshtein distance, or -1 when a name is too long to compare. */
static int levenshtein_ci(const char *a, const char *b) {
    enum { MAX_NAME = 64 };
    size_t la = strlen(a), lb = strlen(b);
    if (la > MAX_NAME || lb > MAX_NAME) return -1;
    int row[MAX_NAME + 1];
    for (size_t j = 0; j <= lb; j++) row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diagonal = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int substitution = diagonal + (tolower((unsigned char)a[i - 1]) !=
                                           tolower((unsigned char)b[j - 1]));
            int deletion = row[j] + 1;
            int insertion = row[j - 1] + 1;
            diagonal = row[j];
            int best = substitution < deletion ? substitution : deletion;
            row[j] = best < insertion ? best : insertion;
        }
    }
    return row[lb];
}

/* True when one name is a case-insensitive prefix of the other and the shorter
 * has at least 3 characters ("optimiser" and "optim"). */
static int prefix_related(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    size_t shorter = la < lb ? la : lb;
    return shorter >= 3 && strncasecmp(a, b, shorter) == 0;
}

/* Writes the first letters of the '_'-separated words of name into out and
 * returns the word count. */
static int initials(const char *name, char *out, size_t n) {
    size_t len = 0;
    int words = 0;
    for (const char *c = name; *c; c++) {
        if (*c != '_' && (c == name || c[-1] == '_')) {
            if (len + 1 < n) out[len++] = (char)tolower((unsigned char)*c);
            words++;
        }
    }
    out[len] = '\0';
    return words;
}

/* True when one name abbreviates the other by word initials ("learning_rate"
 * and "lr", "bs" and "batch_size"). */
static int initials_match(const char *a, const char *b) {
    char ia[64], ib[64];
    if (initials(a, ia, sizeof ia) >= 2 && strcasecmp(ia, b) == 0) return 1;
    if (initials(b, ib, sizeof ib) >= 2 && strcasecmp(ib, a) == 0) return 1;
    return 0;
}

/* Returns the edit distance between a typed name and a candidate when the
 * candidate is a plausible intended name, otherwise -1. A candidate is plausible
 * within a distance of max(2, strlen(typed) / 3). Prefixes and word initials
 * also count, because edit distance misses abbreviations like "lr". */
static int suggestion_distance(const char *typed, const char *candidate) {
    int distance = levenshtein_ci(typed, candidate);
    if (distance < 0) return -1;
    int limit = (int)strlen(typed) / 3;
    if (limit < 2) limit = 2;
    if (distance <= limit) return distance;
    if (prefix_related(typed, candidate) || initials_match(typed, candidate)) return distance;
    return -1;
}

/* Writes "unknown section [x] (did you mean [y]?)" into buf. */
static void describe_unknown_section(const char *section, char *buf, size_t n) {
    const char *best = NULL;
    int best_distance = INT_MAX;
    for (size_t i = 0; i < N_KEYS; i++) {
        if (i > 0 && strcmp(SCHEMA[i].section, SCHEMA[i - 1].section) == 0) continue;
        int d = suggestion_distance(section, SCHEMA[i].section);
        if (d >= 0 && d < best_distance) {
            best = SCHEMA[i].section;
            best_distance = d;
        }
    }
    if (best)
        snprintf(buf, n, "unknown section [%s] (did you mean [%s]?)", section, best);
    else
        snprintf(buf, n, "unknown section [%s]", section);
}

/* Appends "[a], [b]" to buf, listing the sections other than `section` that
 * have `key` (compared case-insensitively), and returns their count. */
static int list_sections_with_key(const char *section, const char *key, char *buf, size_t n) {
    int count = 0;
    size_t used = strlen(buf);
    for (size_t i = 0; i < N_KEYS; i++) {
        if (strcmp(SCHEMA[i].section, section) == 0 || strcasecmp(SCHEMA[i].key, key) != 0)
            continue;
        if (used < n)
            used += (size_t)snprintf(buf + used, n - used, "%s[%s]", count ? ", " : "",
                                     SCHEMA[i].section);
        count++;
    }
    return count;
}

/* Writes the description of an unknown key, with the most likely intended key:
 * first a same-section key differing only in case, then the same key in other
 * sections, then the nearest same-section key, then the nearest key anywhere.
 * An empty section means the key came before any section header. */
static void describe_unknown_key(const char *section, const char *key, char *buf, size_t n) {
    char head[160];
    if (section[0] == '\0')
        snprintf(head, sizeof head, "key '%s' comes before any [section] header", key);
    else
        snprintf(head, sizeof head, "unknown key '%s' in [%s]", key, section);

    int best_same = -1, best_same_distance = INT_MAX;
    int best_other = -1, best_other_distance = INT_MAX;
    for (size_t i = 0; i < N_KEYS; i++) {
        int d = suggestion_distance(key, SCHEMA[i].key);
        if (d < 0) continue;
        if (strcmp(SCHEMA[i].section, section) == 0) {
            if (d < best_same_distance) {
                best_same = (int)i;
                best_same_distance = d;
            }
        } else if (d < best_other_distance) {
            best_other = (int)i;
            best_other_distance = d;
        }
    }

    char sections[160] = "";
    if (best_same >= 0 && best_same_distance == 0) {
        snprintf(buf, n, "%s (did you mean '%s'?)", head, SCHEMA[best_same].key);
    } else if (list_sections_with_key(section, key, sections, sizeof sections) > 0) {
        snprintf(buf, n, "%s ('%s' belongs in %s)", head, key, sections);
    } else if (best_same >= 0) {
        snprintf(buf, n, "%s (did you mean '%s'?)", head, SCHEMA[best_same].key);
    } else if (best_other >= 0) {
        snprintf(buf, n, "%s (did you mean '%s' in [%s]?)", head, SCHEMA[best_other].key,
                 SCHEMA[best_other].section);
    } else {
        snprintf(buf, n, "%s", head);
    }
}

/* Describes why section/key does not name a schema key. */
static void describe_unknown(const char *section, const char *key, char *buf, size_t n) {
    if (section[0] != '\0' && !section_known(section))
        describe_unknown_section(section, buf, n);
    else
        describe_unknown_key(section, key, buf, n);
}

/* ---------------------------------------------------------------------------
 * Values
 * ------------------------------------------------------------------------- */

/* Writes "must be >= 0", "must be in (0, 1)" and so on for spec's bounds. */
static void describe_bounds(const KeySpec *spec, char *buf, size_t n) {
    if (spec->min_kind != BOUND_NONE && spec->max_kind != BOUND_NONE) {
        snprintf(buf, n, "must be in %c%g, %g%c", spec->min_kind == BOUND_INCLUSIVE ? '[' : '(',
                 spec->min, spec->max, spec->max_kind == BOUND_INCLUSIVE ? ']' : ')');
    } else if (spec->min_kind != BOUND_NONE) {
        snprintf(buf, n, "must be %s %g", spec->min_kind == BOUND_INCLUSIVE ? ">=" : ">",
                 spec->min);
    } else {
        snprintf(buf, n, "must be %s %g", spec->max_kind == BOUND_INCLUSIVE ? "<=" : "<",
                 spec->max);
    }
}

static int within_bounds(const KeySpec *spec, double x) {
    if (spec->min_kind == BOUND_INCLUSIVE && !(x >= spec->min)) return 0;
    if (spec->min_kind == BOUND_EXCLUSIVE && !(x > spec->min)) return 0;
    if (spec->max_kind == BOUND_INCLUSIVE && !(x <= spec->max)) return 0;
    if (spec->max_kind == BOUND_EXCLUSIVE && !(x < spec->max)) return 0;
    return 1;
}

/* Parses a whole base-10 integer, or writes the reason for rejecting it into detail. */
static int parse_long(const char *text, long *out, char *detail, size_t n) {
    char *end;
    errno = 0;
    long x = strtol(text, &end, 10);
    if (end == text || *end != '\0' || isspace((unsigned char)text[0])) {
        snprintf(detail, n, "not an integer");
        return -1;
    }
    if (errno == ERANGE) {
        snprintf(detail, n, "integer out of range");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_double(const char *text, double *out, char *detail, size_t n) {
    char *end;
    double x = strtod(text, &end);
    if (end == text || *end != '\0' || isspace((unsigned char)text[0])) {
        snprintf(detail, n, "not a number");
        return -1;
    }
    if (!isfinite(x)) {
        snprintf(detail, n, "not a finite number");
        return -1;
    }
    *out = x;
    return 0;
}

static int parse_bool(const char *text, int *out) {
    static const char *const true_words[] = {"true", "yes", "1"};
    static const char *const false_words[] = {"false", "no", "0"};
    for (size_t i = 0; i < 3; i++) {
        if (strcasecmp(text, true_words[i]) == 0) {
            *out = 1;
            return 0;
        }
        if (strcasecmp(text, false_words[i]) == 0) {
            *out = 0;
            return 0;
        }
    }
    return -1;
}

/* Rejects strings that an INI file cannot carry unchanged. libinih trims
 * surrounding whitespace, and the loader treats ';' or '#' at the start or
 * after whitespace as a comment. */
static int check_string(const char *s, char *detail, size_t n) {
    if (strlen(s) > CONFIG_STR - 1) {
        snprintf(detail, n, "longer than %d bytes", CONFIG_STR - 1);
        return -1;
    }
    size_t len = strlen(s);
    if (len > 0 && (isspace((unsigned char)s[0]) || isspace((unsigned char)s[len - 1]))) {
        snprintf(detail, n, "must not start or end with whitespace");
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)s[i];
        if (iscntrl(c)) {
            snprintf(detail, n, "must not contain control characters");
            return -1;
        }
        if ((c == ';' || c == '#') && (i == 0 || isspace((unsigned char)s[i - 1]))) {
            snprintf(detail, n, "'%c' at the start or after whitespace would start a comment", c);
            return -1;
        }
    }
    return 0;
}

/* Writes "must be one of a, b, c" with spec's allowed words. */
static void describe_words(const KeySpec *spec, char *buf, size_t n) {
    size_t used = (size_t)snprintf(buf, n, "must be one of ");
    for (size_t i = 0; spec->words[i] && used < n; i++)
        used += (size_t)snprintf(buf + used, n - used, "%s%s", i ? ", " : "", spec->words[i]);
}

/* Parses a comma-separated list of integers. Empty text is an empty list. */
static int parse_long_list(const KeySpec *spec, const char *text, long *items, int *count,
                           char *detail, size_t n) {
    char *copy = sd_strdup(text);
    int result = 0;
    *count = 0;
    if (trim(copy)[0] == '\0') goto done;

    char *cursor = copy;
    for (;;) {
        char *comma = strchr(cursor, ',');
        if (comma) *comma = '\0';
        char *item = trim(cursor);
        if (*count == CONFIG_MAX_MILESTONES) {
            snprintf(detail, n, "more than %d items", CONFIG_MAX_MILESTONES);
            result = -1;
            goto done;
        }
        if (item[0] == '\0') {
            snprintf(detail, n, "empty item in the list");
            result = -1;
            goto done;
        }
        char reason[64], bounds[64];
        long x;
        if (parse_long(item, &x, reason, sizeof reason) < 0) {
            snprintf(detail, n, "item '%s': %s", item, reason);
            result = -1;
            goto done;
        }
        if (!within_bounds(spec, (double)x)) {
            describe_bounds(spec, bounds, sizeof bounds);
            snprintf(detail, n, "item %ld %s", x, bounds);
            result = -1;
            goto done;
        }
        items[(*count)++] = x;
        if (!comma) break;
        cursor = comma + 1;
    }
done:
    free(copy);
    return result;
}

/* Parses text as spec's type, checks it, and stores it into cfg. On failure
 * cfg is unchanged and the reason (without key or value) is in detail. */
static int parse_value(const KeySpec *spec, const char *text, Config *cfg, char *detail,
                       size_t n) {
    long x = 0;
    double d = 0;
    int flag = 0;

    switch (spec->type) {
    case TYPE_INT:
    case TYPE_LONG:
        if (parse_long(text, &x, detail, n) < 0) return -1;
        if (spec->type == TYPE_INT && (x < INT_MIN || x > INT_MAX)) {
            snprintf(detail, n, "integer out of range");
            return -1;
        }
        if (!within_bounds(spec, (double)x)) {
            describe_bounds(spec, detail, n);
            return -1;
        }
        if (spec->type == TYPE_INT)
            *(int *)field_ptr(cfg, spec) = (int)x;
        else
            *(long *)field_ptr(cfg, spec) = x;
        return 0;

    case TYPE_DOUBLE:
        if (parse_double(text, &d, detail, n) < 0) return -1;
        if (!within_bounds(spec, d)) {
            describe_bounds(spec, detail, n);
            return -1;
        }
        *(double *)field_ptr(cfg, spec) = d;
        return 0;

    case TYPE_BOOL:
        if (parse_bool(text, &flag) < 0) {
            snprintf(detail, n, "not a boolean (use true, false, yes, no, 1 or 0)");
            return -1;
        }
        *(int *)field_ptr(cfg, spec) = flag;
        return 0;

    case TYPE_STRING:
        if (check_string(text, detail, n) < 0) return -1;
        /* strncpy zero-fills the rest of the field, so equal values compare equal with memcmp. */
        strncpy(field_ptr(cfg, spec), text, CONFIG_STR);
        return 0;

    case TYPE_ENUM:
        for (size_t i = 0; spec->words[i]; i++) {
            if (strcmp(text, spec->words[i]) == 0) {
                strncpy(field_ptr(cfg, spec), text, CONFIG_STR);
                return 0;
            }
        }
        describe_words(spec, detail, n);
        return -1;

    case TYPE_LONG_LIST: {
        long items[CONFIG_MAX_MILESTONES] = {0};
        int count = 0;
        if (parse_long_list(spec, text, items, &count, detail, n) < 0) return -1;
        memcpy(field_ptr(cfg, spec), items, sizeof items);
        *(int *)((char *)cfg + spec->count_offset) = count;
        return 0;
    }
    }
    return -1;
}

/* Formats a stored value as config_write() prints it. */
static void format_value(const KeySpec *spec, const Config *cfg, char *buf, size_t n) {
    const void *p = field_cptr(cfg, spec);
    switch (spec->type) {
    case TYPE_INT:
        snprintf(buf, n, "%d", *(const int *)p);
        return;
    case TYPE_LONG:
        snprintf(buf, n, "%ld", *(const long *)p);
        return;
    case TYPE_DOUBLE:
        format_double(*(const double *)p, buf, n);
        return;
    case TYPE_BOOL:
        snprintf(buf, n, "%s", *(const int *)p ? "true" : "false");
        return;
    case TYPE_STRING:
    case TYPE_ENUM:
        snprintf(buf, n, "%.*s", CONFIG_STR - 1, (const char *)p);
        return;
    case TYPE_LONG_LIST: {
        const long *items = p;
        int count = *(const int *)((const char *)cfg + spec->count_offset);
        size_t used = 0;
        buf[0] = '\0';
        for (int i = 0; i < count && i < CONFIG_MAX_MILESTONES && used < n; i++)
            used += (size_t)snprintf(buf + used, n - used, "%s%ld", i ? ", " : "", items[i]);
        return;
    }
    }
}

/* Checks a stored value against spec (for a Config edited in code). */
static int check_stored_value(const KeySpec *spec, const Config *cfg, char *detail, size_t n) {
    const void *p = field_cptr(cfg, spec);
    switch (spec->type) {
    case TYPE_INT:
        if (within_bounds(spec, (double)*(const int *)p)) return 0;
        break;
    case TYPE_LONG:
        if (within_bounds(spec, (double)*(const long *)p)) return 0;
        break;
    case TYPE_DOUBLE:
        if (!isfinite(*(const double *)p)) {
            snprintf(detail, n, "not a finite number");
            return -1;
        }
        if (within_bounds(spec, *(const double *)p)) return 0;
        break;
    case TYPE_BOOL:
        if (*(const int *)p == 0 || *(const int *)p == 1) return 0;
        snprintf(detail, n, "must be 0 or 1");
        return -1;
    case TYPE_STRING:
        return check_string(p, detail, n);
    case TYPE_ENUM: {
        for (size_t i = 0; spec->words[i]; i++)
            if (strcmp(p, spec->words[i]) == 0) return 0;
        describe_words(spec, detail, n);
        return -1;
    }
    case TYPE_LONG_LIST: {
        const long *items = p;
        int count = *(const int *)((const char *)cfg + spec->count_offset);
        if (count < 0 || count > CONFIG_MAX_MILESTONES) {
            snprintf(detail, n, "item count %d is not in [0, %d]", count, CONFIG_MAX_MILESTONES);
            return -1;
        }
        for (int i = 0; i < count; i++) {
            if (!within_bounds(spec, (double)items[i])) {
                char bounds[64];
                describe_bounds(spec, bounds, sizeof bounds);
                snprintf(detail, n, "item %ld %s", items[i], bounds);
                return -1;
            }
        }
        return 0;
    }
    }
    describe_bounds(spec, detail, n);
    return -1;
}

/* ---------------------------------------------------------------------------
 * Defaults
 * ------------------------------------------------------------------------- */

void config_defaults(Config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    for (size_t i = 0; i < N_KEYS; i++) {
        char detail[160];
        int status = parse_value(&SCHEMA[i], SCHEMA[i].default_text, cfg, detail, sizeof detail);
        CHECK(status == 0, "default of [%s] %s is invalid: %s", SCHEMA[i].section, SCHEMA[i].key,
              detail);
    }
}

/* ---------------------------------------------------------------------------
 * Loading
 * ------------------------------------------------------------------------- */

typedef struct {
    Config work;            /* copied to the caller's Config only when the whole file is valid */
    const char *path;
    FILE *file;
    char *line;             /* getline() buffer */
    size_t line_capacity;
    int lineno;             /* lines read so far, so the line libinih is processing */
    int set_line[N_KEYS];   /* line where each key was set, 0 when not set */
    int error_line;         /* line of the first error, 0 when none */
    int read_errno;         /* errno of a failed read, 0 when none */
    char *err;
    size_t errlen;
} LoadContext;

static void load_error(LoadContext *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void load_error(LoadContext *ctx, int line, const char *fmt, ...) {
    char message[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(message, sizeof message, fmt, ap);
    va_end(ap);
    set_error(ctx->err, ctx->errlen, "%s:%d: %s", ctx->path, line, message);
    ctx->error_line = line;
}

/* Checks a section header line ("[name]" after leading whitespace) so that an
 * unknown section is reported at its own line, even when it has no keys. A
 * header without ']' is left to libinih, which reports a syntax error. */
static void check_section_header(LoadContext *ctx, const char *start) {
    const char *close = strchr(start, ']');
    if (!close) return;
    size_t len = (size_t)(close - start - 1);
    char name[200];
    if (len >= sizeof name) len = sizeof name - 1;
    memcpy(name, start + 1, len);
    name[len] = '\0';
    if (!section_known(name)) {
        char message[300];
        describe_unknown_section(name, message, sizeof message);
        load_error(ctx, ctx->lineno, "%s", message);
    }
}

/* libinih reader: reads one whole line, counts it, and passes it on without
 * leading whitespace. Stripping the indentation stops libinih 55 from treating
 * an indented "key = value" line as a continuation of the previous value (its
 * default INI_ALLOW_MULTILINE). Returns NULL to stop parsing at end of file, on
 * a read error, on a line longer than libinih's buffer (which it would
 * otherwise split silently) and after the first error. */
static char *read_line(char *str, int num, void *stream) {
    LoadContext *ctx = stream;
    if (ctx->error_line) return NULL;

    errno = 0;
    ssize_t len = getline(&ctx->line, &ctx->line_capacity, ctx->file);
    if (len < 0) {
        if (ferror(ctx->file)) ctx->read_errno = errno ? errno : EIO;
        return NULL;
    }
    ctx->lineno++;

    char *start = ctx->line;
    if (ctx->lineno == 1 && strncmp(start, "\xEF\xBB\xBF", 3) == 0) start += 3; /* UTF-8 BOM */
    while (*start == ' ' || *start == '\t') start++;
    size_t n = (size_t)len - (size_t)(start - ctx->line);
    if (n + 1 > (size_t)num) {
        load_error(ctx, ctx->lineno, "line is longer than %d bytes, the libinih line limit",
                   num - 2);
        return NULL;
    }
    if (start[0] == '[') {
        check_section_header(ctx, start);
        if (ctx->error_line) return NULL;
    }
    memcpy(str, start, n + 1);
    return str;
}

/* libinih handler: applies one key = value line to ctx->work. */
static int handle_pair(void *user, const char *section, const char *name, const char *value) {
    LoadContext *ctx = user;
    if (ctx->error_line) return 0;
    int line = ctx->lineno;

    int index = find_key(section, name);
    if (index < 0) {
        char message[300];
        describe_unknown(section, name, message, sizeof message);
        load_error(ctx, line, "%s", message);
        return 0;
    }
    const KeySpec *spec = &SCHEMA[index];
    if (ctx->set_line[index]) {
        load_error(ctx, line, "[%s] %s is set twice (lines %d and %d)", spec->section, spec->key,
                   ctx->set_line[index], line);
        return 0;
    }

    char *text = sd_strdup(value);
    strip_hash_comment(text);
    char detail[200];
    int status = parse_value(spec, text, &ctx->work, detail, sizeof detail);
    if (status < 0) load_error(ctx, line, "[%s] %s = %s: %s", spec->section, spec->key, text, detail);
    free(text);
    if (status < 0) return 0;

    ctx->set_line[index] = line;
    return 1;
}

int config_load(Config *cfg, const char *path, char *err, size_t errlen) {
    FILE *file = fopen(path, "r");
    if (!file) {
        set_error(err, errlen, "cannot read config '%s': %s", path, strerror(errno));
        return -1;
    }

    LoadContext *ctx = sd_calloc(1, sizeof *ctx);
    ctx->work = *cfg;
    ctx->path = path;
    ctx->file = file;
    ctx->err = err;
    ctx->errlen = errlen;

    int status = ini_parse_stream(read_line, ctx, handle_pair, ctx);
    int result = -1;
    if (ctx->read_errno) {
        set_error(err, errlen, "cannot read config '%s': %s", path, strerror(ctx->read_errno));
    } else if (status > 0 && (ctx->error_line == 0 || status < ctx->error_line)) {
        /* libinih found a line that is neither a section header, a comment nor a key. */
        set_error(err, errlen, "%s:%d: syntax error: expected '[section]', 'key = value' or a comment",
                  path, status);
    } else if (ctx->error_line) {
        /* The message is already in err. */
    } else if (status < 0) {
        set_error(err, errlen, "cannot parse config '%s': libinih returned %d", path, status);
    } else {
        *cfg = ctx->work;
        result = 0;
    }

    free(ctx->line);
    fclose(file);
    free(ctx);
    return result;
}

/* ---------------------------------------------------------------------------
 * Overrides
 * ------------------------------------------------------------------------- */

int config_override(Config *cfg, const char *assignment, char *err, size_t errlen) {
    char *copy = sd_strdup(assignment);
    int result = -1;

    char *equals = strchr(copy, '=');
    char *dot = equals ? memchr(copy, '.', (size_t)(equals - copy)) : NULL;
    if (!equals || !dot) {
        set_error(err, errlen, "override '%s': expected the form section.key=value", assignment);
        goto done;
    }
    *equals = '\0';
    *dot = '\0';
    char *section = trim(copy);
    char *key = trim(dot + 1);
    char *value = trim(equals + 1);
    if (section[0] == '\0' || key[0] == '\0') {
        set_error(err, errlen, "override '%s': expected the form section.key=value", assignment);
        goto done;
    }

    int index = find_key(section, key);
    if (index < 0) {
        char message[300];
        describe_unknown(section, key, message, sizeof message);
        set_error(err, errlen, "override '%s': %s", assignment, message);
        goto done;
    }
    char detail[200];
    if (parse_value(&SCHEMA[index], value, cfg, detail, sizeof detail) < 0) {
        set_error(err, errlen, "override '%s': %s", assignment, detail);
        goto done;
    }
    result = 0;
done:
    free(copy);
    return result;
}

/* ---------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------- */

static int check_cross_keys(const Config *cfg, char *err, size_t errlen) {
    if (cfg->out_dir[0] == '\0') {
        set_error(err, errlen, "[run] out_dir is empty");
        return -1;
    }
    if (strchr(cfg->run_name, '/') || strcmp(cfg->run_name, ".") == 0 ||
        strcmp(cfg->run_name, "..") == 0) {
        set_error(err, errlen, "[run] name = %s: must be a single directory name, not a path",
                  cfg->run_name);
        return -1;
    }
    if (strcmp(cfg->arch, "transformer") == 0 && cfg->d_model % cfg->n_heads != 0) {
        set_error(err, errlen, "[model] d_model = %d is not divisible by n_heads = %d",
                  cfg->d_model, cfg->n_heads);
        return -1;
    }
    int images = strcmp(cfg->task, "images") == 0;
    if (images && strcmp(cfg->arch, "transformer") == 0) {
        set_error(err, errlen, "[model] arch = transformer does not classify images; use lenet, vgg11, vgg13, "
                               "vgg16, vgg19, resnet20 or mlp with [task] name = images");
        return -1;
    }
    if (!images && strcmp(cfg->arch, "transformer") != 0 && strcmp(cfg->arch, "mlp") != 0) {
        set_error(err, errlen, "[model] arch = %s needs [task] name = images", cfg->arch);
        return -1;
    }
    if (images && strcmp(cfg->dataset, "folder") == 0 && (cfg->image_size == 0 || cfg->data_path[0] == '\0')) {
        set_error(err, errlen, "[task] dataset = folder needs path and image_size (images are resized to it)");
        return -1;
    }
    if (images && (strcmp(cfg->dataset, "cifar10") == 0 || strcmp(cfg->dataset, "cifar100") == 0) &&
        cfg->data_path[0] == '\0') {
        set_error(err, errlen, "[task] dataset = %s needs path: the directory of the binary batches "
                               "(no Debian package ships them)", cfg->dataset);
        return -1;
    }
    int warms_up = strcmp(cfg->schedule, "warmup") == 0 ||
                   strcmp(cfg->schedule, "warmup_cosine") == 0;
    if (warms_up && cfg->warmup < 1) {
        set_error(err, errlen, "[schedule] name = %s requires warmup >= 1, got warmup = %ld",
                  cfg->schedule, cfg->warmup);
        return -1;
    }
    if (cfg->warmup >= cfg->steps) {
        set_error(err, errlen, "[schedule] warmup = %ld must be less than [train] steps = %ld",
                  cfg->warmup, cfg->steps);
        return -1;
    }
    if (strcmp(cfg->schedule, "multistep") == 0 && cfg->n_milestones == 0) {
        set_error(err, errlen, "[schedule] name = multistep requires at least one milestone");
        return -1;
    }
    for (int i = 1; i < cfg->n_milestones; i++) {
        if (cfg->milestones[i] <= cfg->milestones[i - 1]) {
            set_error(err, errlen,
                      "[schedule] milestones must be strictly increasing, but %ld follows %ld",
                      cfg->milestones[i], cfg->milestones[i - 1]);
            return -1;
        }
    }
    if (cfg->checkpoint_every % cfg->eval_every != 0) {
        /* Metrics rows average the training loss since the previous row; a
         * checkpoint between rows would lose that running sum on resume. */
        set_error(err, errlen, "[train] checkpoint_every = %ld must be a multiple of eval_every = %ld",
                  cfg->checkpoint_every, cfg->eval_every);
        return -1;
    }
    if (cfg->accumulate > cfg->batch_size) {
        set_error(err, errlen, "[train] accumulate = %d exceeds batch_size = %ld",
                  cfg->accumulate, cfg->batch_size);
        return -1;
    }
    if (strcmp(cfg->optimizer, "sgd") == 0 && cfg->nesterov && cfg->momentum == 0) {
        set_error(err, errlen, "[optim] nesterov = true requires momentum > 0");
        return -1;
    }
    return 0;
}

int config_validate(const Config *cfg, char *err, size_t errlen) {
    for (size_t i = 0; i < N_KEYS; i++) {
        const KeySpec *spec = &SCHEMA[i];
        if (spec->type == TYPE_STRING || spec->type == TYPE_ENUM) {
            const char *s = field_cptr(cfg, spec);
            if (!memchr(s, '\0', CONFIG_STR)) {
                set_error(err, errlen, "[%s] %s is not NUL-terminated within %d bytes",
                          spec->section, spec->key, CONFIG_STR);
                return -1;
            }
        }
        char detail[200];
        if (check_stored_value(spec, cfg, detail, sizeof detail) < 0) {
            char value[400];
            format_value(spec, cfg, value, sizeof value);
            set_error(err, errlen, "[%s] %s = %s: %s", spec->section, spec->key, value, detail);
            return -1;
        }
    }
    return check_cross_keys(cfg, err, errlen);
}

/* ---------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------- */

/* Writes the INI text of cfg to file; returns -1 with a message when a value
 * cannot be written so that it reads back unchanged. */
static int write_entries(const Config *cfg, FILE *file, char *err, size_t errlen) {
    fprintf(file, "; resolved configuration written by specdyn\n");
    for (size_t i = 0; i < N_KEYS; i++) {
        const KeySpec *spec = &SCHEMA[i];
        if (i == 0 || strcmp(spec->section, SCHEMA[i - 1].section) != 0)
            fprintf(file, "\n[%s]\n", spec->section);

        char detail[200];
        if ((spec->type == TYPE_STRING || spec->type == TYPE_ENUM) &&
            !memchr(field_cptr(cfg, spec), '\0', CONFIG_STR)) {
            set_error(err, errlen, "cannot write [%s] %s: not NUL-terminated", spec->section,
                      spec->key);
            return -1;
        }
        if (spec->type == TYPE_STRING && check_string(field_cptr(cfg, spec), detail,
                                                      sizeof detail) < 0) {
            set_error(err, errlen, "cannot write [%s] %s: %s", spec->section, spec->key, detail);
            return -1;
        }

        char value[400];
        format_value(spec, cfg, value, sizeof value);
        /* A line must fit libinih's buffer with its '\n' and '\0'. */
        size_t line_length = strlen(spec->key) + 3 + strlen(value);
        if (line_length + 2 > INI_MAX_LINE) {
            set_error(err, errlen, "cannot write [%s] %s: the line would be longer than %d bytes",
                      spec->section, spec->key, INI_MAX_LINE - 2);
            return -1;
        }
        /* An empty value is written as "key =" so the line has no trailing space. */
        fprintf(file, "; %s\n%s =%s%s\n", spec->help, spec->key, value[0] ? " " : "", value);
    }
    return 0;
}

int config_write(const Config *cfg, const char *path, char *err, size_t errlen) {
    size_t tmp_size = strlen(path) + 32;
    char *tmp_path = sd_malloc(tmp_size);
    snprintf(tmp_path, tmp_size, "%s.tmp.%ld", path, (long)getpid());

    int result = -1;
    FILE *file = fopen(tmp_path, "w");
    if (!file) {
        set_error(err, errlen, "cannot write config '%s': %s", tmp_path, strerror(errno));
        free(tmp_path);
        return -1;
    }

    if (write_entries(cfg, file, err, errlen) < 0) {
        fclose(file);
        goto fail;
    }
    if (fflush(file) != 0 || ferror(file) || fsync(fileno(file)) != 0) {
        int saved = errno;
        set_error(err, errlen, "cannot write config '%s': %s", tmp_path, strerror(saved));
        fclose(file);
        goto fail;
    }
    if (fclose(file) != 0) {
        set_error(err, errlen, "cannot write config '%s': %s", tmp_path, strerror(errno));
        goto fail;
    }
    if (rename(tmp_path, path) != 0) {
        set_error(err, errlen, "cannot rename '%s' to '%s': %s", tmp_path, path, strerror(errno));
        goto fail;
    }
    result = 0;
    free(tmp_path);
    return result;

fail:
    unlink(tmp_path);
    free(tmp_path);
    return result;
}
