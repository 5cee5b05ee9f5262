/* Tests for core/config.c: defaults, INI loading and its error messages,
 * overrides, cross-key validation and the write/load roundtrip. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config.h"
#include "test.h"

/* Writes text to test_tmpdir()/name and returns the path (valid until the next call). */
static const char *write_scratch(const char *name, const char *text) {
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", test_tmpdir(), name);
    FILE *f = fopen(path, "w");
    if (!f) {
        test_fail(__FILE__, __LINE__, "fopen", "cannot create %s", path);
        return path;
    }
    fputs(text, f);
    fclose(f);
    return path;
}

/* Fills cfg with defaults and loads text from a scratch file; returns config_load's status. */
static int load_text(Config *cfg, const char *name, const char *text, char *err, size_t errlen) {
    config_defaults(cfg);
    return config_load(cfg, write_scratch(name, text), err, errlen);
}

/* Loads text that must fail and checks the whole message against
 * "<path>:<line>: <rest>". */
static void expect_load_error(const char *name, const char *text, int line, const char *rest) {
    Config cfg;
    char err[512] = "", expected[1024];
    int status = load_text(&cfg, name, text, err, sizeof err);
    snprintf(expected, sizeof expected, "%s/%s:%d: %s", test_tmpdir(), name, line, rest);
    EXPECT(status == -1, "load of %s returned %d", name, status);
    EXPECT(strcmp(err, expected) == 0, "message\n      got:      %s\n      expected: %s", err,
           expected);
}

static void defaults_match_schema(void) {
    Config cfg;
    config_defaults(&cfg);
    EXPECT(strcmp(cfg.run_name, "") == 0, "run_name '%s'", cfg.run_name);
    EXPECT(strcmp(cfg.out_dir, "runs") == 0, "out_dir '%s'", cfg.out_dir);
    EXPECT(cfg.seed == 0, "seed %ld", cfg.seed);
    EXPECT(cfg.threads == 2, "threads %d", cfg.threads);
    EXPECT(strcmp(cfg.task, "modular") == 0, "task '%s'", cfg.task);
    EXPECT(cfg.p == 113, "p %d", cfg.p);
    EXPECT(strcmp(cfg.op, "add") == 0, "op '%s'", cfg.op);
    EXPECT(cfg.train_frac == 0.3, "train_frac %g", cfg.train_frac);
    EXPECT(strcmp(cfg.arch, "transformer") == 0, "arch '%s'", cfg.arch);
    EXPECT(cfg.d_model == 128, "d_model %d", cfg.d_model);
    EXPECT(cfg.n_heads == 4, "n_heads %d", cfg.n_heads);
    EXPECT(cfg.d_mlp == 512, "d_mlp %d", cfg.d_mlp);
    EXPECT(cfg.n_layers == 1, "n_layers %d", cfg.n_layers);
    EXPECT(cfg.layernorm == 0, "layernorm %d", cfg.layernorm);
    EXPECT(strcmp(cfg.positional, "sinusoidal") == 0, "positional '%s'", cfg.positional);
    EXPECT(strcmp(cfg.activation, "relu") == 0, "activation '%s'", cfg.activation);
    EXPECT(cfg.hidden == 100, "hidden %d", cfg.hidden);
    EXPECT(cfg.depth == 4, "depth %d", cfg.depth);
    EXPECT(strcmp(cfg.optimizer, "adamw") == 0, "optimizer '%s'", cfg.optimizer);
    EXPECT(cfg.lr == 1e-3, "lr %g", cfg.lr);
    EXPECT(cfg.beta1 == 0.9, "beta1 %g", cfg.beta1);
    EXPECT(cfg.beta2 == 0.98, "beta2 %g", cfg.beta2);
    EXPECT(cfg.eps == 1e-8, "eps %g", cfg.eps);
    EXPECT(cfg.weight_decay == 1.0, "weight_decay %g", cfg.weight_decay);
    EXPECT(cfg.momentum == 0.0, "momentum %g", cfg.momentum);
    EXPECT(cfg.nesterov == 0, "nesterov %d", cfg.nesterov);
    EXPECT(strcmp(cfg.decay, "all") == 0, "decay '%s'", cfg.decay);
    EXPECT(cfg.clip == 0.0, "clip %g", cfg.clip);
    EXPECT(strcmp(cfg.schedule, "constant") == 0, "schedule '%s'", cfg.schedule);
    EXPECT(cfg.warmup == 0, "warmup %ld", cfg.warmup);
    EXPECT(cfg.n_milestones == 0, "n_milestones %d", cfg.n_milestones);
    EXPECT(cfg.gamma == 0.1, "gamma %g", cfg.gamma);
    EXPECT(cfg.min_factor == 0.0, "min_factor %g", cfg.min_factor);
    EXPECT(cfg.steps == 40000, "steps %ld", cfg.steps);
    EXPECT(cfg.batch_size == 16384, "batch_size %ld", cfg.batch_size);
    EXPECT(cfg.accumulate == 1, "accumulate %d", cfg.accumulate);
    EXPECT(cfg.eval_every == 100, "eval_every %ld", cfg.eval_every);
    EXPECT(cfg.checkpoint_every == 1000, "checkpoint_every %ld", cfg.checkpoint_every);
    EXPECT(cfg.keep_checkpoints == 3, "keep_checkpoints %d", cfg.keep_checkpoints);
    EXPECT(cfg.log_every == 100, "log_every %ld", cfg.log_every);
    EXPECT(cfg.trace_every == 100, "trace_every %ld", cfg.trace_every);
    EXPECT(cfg.trace_vectors == 8, "trace_vectors %d", cfg.trace_vectors);
    EXPECT(strcmp(cfg.trace_layers, "*") == 0, "trace_layers '%s'", cfg.trace_layers);
    EXPECT(cfg.trace_prune == 0.0, "trace_prune %g", cfg.trace_prune);

    char err[256] = "";
    EXPECT(config_validate(&cfg, err, sizeof err) == 0, "defaults invalid: %s", err);
}

static void load_valid_file(void) {
    Config cfg;
    char err[512] = "";
    const char *text =
        "; grokking run\n"
        "[run]\n"
        "name = grok\n"
        "seed = 7\n"
        "[task]\n"
        "p = 97\n"
        "op = mul\n"
        "train_frac = 0.5\n"
        "[model]\n"
        "arch = mlp\n"
        "layernorm = yes\n"
        "activation = gelu\n"
        "[optim]\n"
        "name = sgd\n"
        "lr = 0.01\n"
        "momentum = 0.9\n"
        "nesterov = True\n"
        "decay = matrices\n"
        "[schedule]\n"
        "name = warmup_cosine\n"
        "warmup = 10\n"
        "min_factor = 1\n"
        "[train]\n"
        "steps = 500\n"
        "batch_size = 512\n"
        "[trace]\n"
        "every = 0\n"
        "layers = blocks.*.attn.W_Q,embed\n";
    int status = load_text(&cfg, "valid.ini", text, err, sizeof err);
    EXPECT(status == 0, "load failed: %s", err);

    EXPECT(strcmp(cfg.run_name, "grok") == 0, "run_name '%s'", cfg.run_name);
    EXPECT(cfg.seed == 7, "seed %ld", cfg.seed);
    EXPECT(cfg.p == 97, "p %d", cfg.p);
    EXPECT(strcmp(cfg.op, "mul") == 0, "op '%s'", cfg.op);
    EXPECT(cfg.train_frac == 0.5, "train_frac %g", cfg.train_frac);

    EXPECT(strcmp(cfg.arch, "mlp") == 0, "arch '%s'", cfg.arch);
    EXPECT(cfg.layernorm == 1, "layernorm %d", cfg.layernorm);
    EXPECT(strcmp(cfg.activation, "gelu") == 0, "activation '%s'", cfg.activation);

    EXPECT(strcmp(cfg.optimizer, "sgd") == 0, "optimizer '%s'", cfg.optimizer);
    EXPECT(cfg.lr == 0.01, "lr %g", cfg.lr);
    EXPECT(cfg.momentum == 0.9, "momentum %g", cfg.momentum);
    EXPECT(cfg.nesterov == 1, "nesterov %d", cfg.nesterov);
    EXPECT(strcmp(cfg.decay, "matrices") == 0, "decay '%s'", cfg.decay);

    EXPECT(strcmp(cfg.schedule, "warmup_cosine") == 0, "schedule '%s'", cfg.schedule);
    EXPECT(cfg.warmup == 10, "warmup %ld", cfg.warmup);
    EXPECT(cfg.min_factor == 1.0, "min_factor %g", cfg.min_factor);

    EXPECT(cfg.steps == 500, "steps %ld", cfg.steps);
    EXPECT(cfg.batch_size == 512, "batch_size %ld", cfg.batch_size);
    EXPECT(cfg.trace_every == 0, "trace_every %ld", cfg.trace_every);
    EXPECT(strcmp(cfg.trace_layers, "blocks.*.attn.W_Q,embed") == 0, "trace_layers '%s'",
           cfg.trace_layers);
    /* Keys absent from the file keep their defaults. */
    EXPECT(cfg.d_model == 128, "d_model %d", cfg.d_model);
    EXPECT(strcmp(cfg.out_dir, "runs") == 0, "out_dir '%s'", cfg.out_dir);
    EXPECT(config_validate(&cfg, err, sizeof err) == 0, "valid file rejected: %s", err);
}

static void load_inline_comments(void) {
    Config cfg;
    char err[512] = "";
    const char *text =
        "[optim] ; optimiser settings\n"
        "lr = 0.02 ; semicolon comment\n"
        "eps = 1e-6 # hash comment\n"
        "name = adam\t# tab before the hash\n"
        "  weight_decay = 0.5   ; indented key\n"
        "# a whole-line hash comment\n"
        "decay = # nothing but a comment after this\n"
        "[trace]\n"
        "layers = embed;unembed ; ';' inside the value stays\n";
    /* "decay" gets an empty value, which is not a valid word. */
    int status = load_text(&cfg, "comments.ini", text, err, sizeof err);
    EXPECT(status == -1, "empty enum value accepted");
    EXPECT(strstr(err, ":7: [optim] decay = : must be one of all, matrices") != NULL, "message '%s'",
           err);

    const char *valid =
        "[optim] ; optimiser settings\n"
        "lr = 0.02 ; semicolon comment\n"
        "eps = 1e-6 # hash comment\n"
        "name = adam\t# tab before the hash\n"
        "  weight_decay = 0.5   ; indented key\n"
        "# a whole-line hash comment\n"
        "[trace]\n"
        "layers = embed;unembed ; ';' inside the value stays\n";
    status = load_text(&cfg, "comments.ini", valid, err, sizeof err);
    EXPECT(status == 0, "load failed: %s", err);
    EXPECT(cfg.lr == 0.02, "lr %g", cfg.lr);
    EXPECT(cfg.eps == 1e-6, "eps %g", cfg.eps);
    EXPECT(strcmp(cfg.optimizer, "adam") == 0, "optimizer '%s'", cfg.optimizer);
    EXPECT(cfg.weight_decay == 0.5, "weight_decay %g", cfg.weight_decay);
    EXPECT(strcmp(cfg.trace_layers, "embed;unembed") == 0, "trace_layers '%s'", cfg.trace_layers);
}

static void load_crlf_line_endings(void) {
    Config cfg;
    char err[512] = "";
    int status = load_text(&cfg, "crlf.ini", "[task]\r\np = 59\r\nop = sub\r\n", err, sizeof err);
    EXPECT(status == 0, "load failed: %s", err);
    EXPECT(cfg.p == 59, "p %d", cfg.p);
    EXPECT(strcmp(cfg.op, "sub") == 0, "op '%s'", cfg.op);
}

static void load_milestones_list(void) {
    Config cfg;
    char err[512] = "";
    int status = load_text(&cfg, "ms.ini", "[schedule]\nmilestones = 1000, 2000,3000 ,4000\n", err,
                           sizeof err);
    EXPECT(status == 0, "load failed: %s", err);
    EXPECT(cfg.n_milestones == 4, "n_milestones %d", cfg.n_milestones);
    EXPECT(cfg.milestones[0] == 1000, "milestones[0] %ld", cfg.milestones[0]);
    EXPECT(cfg.milestones[1] == 2000, "milestones[1] %ld", cfg.milestones[1]);
    EXPECT(cfg.milestones[2] == 3000, "milestones[2] %ld", cfg.milestones[2]);
    EXPECT(cfg.milestones[3] == 4000, "milestones[3] %ld", cfg.milestones[3]);
    EXPECT(cfg.milestones[4] == 0, "unused milestones[4] %ld", cfg.milestones[4]);

    status = load_text(&cfg, "ms.ini", "[schedule]\nmilestones =\n", err, sizeof err);
    EXPECT(status == 0, "empty list rejected: %s", err);
    EXPECT(cfg.n_milestones == 0, "n_milestones %d", cfg.n_milestones);

    char sixteen[200] = "[schedule]\nmilestones = 1";
    for (int i = 2; i <= CONFIG_MAX_MILESTONES; i++)
        snprintf(sixteen + strlen(sixteen), sizeof sixteen - strlen(sixteen), ",%d", i);
    strcat(sixteen, "\n");
    status = load_text(&cfg, "ms.ini", sixteen, err, sizeof err);
    EXPECT(status == 0, "16 milestones rejected: %s", err);
    EXPECT(cfg.n_milestones == CONFIG_MAX_MILESTONES, "n_milestones %d", cfg.n_milestones);
    EXPECT(cfg.milestones[15] == 16, "milestones[15] %ld", cfg.milestones[15]);

    expect_load_error("ms17.ini",
                      "[schedule]\nmilestones = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17\n", 2,
                      "[schedule] milestones = 1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17: "
                      "more than 16 items");
    expect_load_error("msbad.ini", "[schedule]\nmilestones = 100, 2x0\n", 2,
                      "[schedule] milestones = 100, 2x0: item '2x0': not an integer");
    expect_load_error("msempty.ini", "[schedule]\nmilestones = 100,,200\n", 2,
                      "[schedule] milestones = 100,,200: empty item in the list");
    expect_load_error("mstrail.ini", "[schedule]\nmilestones = 100,\n", 2,
                      "[schedule] milestones = 100,: empty item in the list");
    expect_load_error("mszero.ini", "[schedule]\nmilestones = 0, 100\n", 2,
                      "[schedule] milestones = 0, 100: item 0 must be >= 1");
}

static void load_missing_file(void) {
    Config cfg;
    char path[512], err[512] = "", expected[1024];
    config_defaults(&cfg);
    snprintf(path, sizeof path, "%s/does-not-exist.ini", test_tmpdir());
    EXPECT(config_load(&cfg, path, err, sizeof err) == -1, "missing file loaded");
    snprintf(expected, sizeof expected, "cannot read config '%s': No such file or directory", path);
    EXPECT(strcmp(err, expected) == 0, "message '%s'", err);

    EXPECT(config_load(&cfg, test_tmpdir(), err, sizeof err) == -1, "directory loaded");
    snprintf(expected, sizeof expected, "cannot read config '%s': Is a directory", test_tmpdir());
    EXPECT(strcmp(err, expected) == 0, "message '%s'", err);
}

static void load_bad_integers(void) {
    expect_load_error("int1.ini", "; comment\n[task]\n\np = abc\n", 4, "[task] p = abc: not an integer");
    expect_load_error("int2.ini", "[task]\np = 12abc\n", 2, "[task] p = 12abc: not an integer");
    expect_load_error("int3.ini", "[task]\np = 1.5\n", 2, "[task] p = 1.5: not an integer");
    expect_load_error("int4.ini", "[task]\np =\n", 2, "[task] p = : not an integer");
    expect_load_error("int5.ini", "[train]\nsteps = 99999999999999999999\n", 2,
                      "[train] steps = 99999999999999999999: integer out of range");
    expect_load_error("int6.ini", "[model]\nd_model = 3000000000\n", 2,
                      "[model] d_model = 3000000000: integer out of range");
    expect_load_error("int7.ini", "[task]\np = 0x10\n", 2, "[task] p = 0x10: not an integer");
}

static void load_out_of_range(void) {
    expect_load_error("range1.ini", "[optim]\nname = adam\nlr = -1\n", 3,
                      "[optim] lr = -1: must be >= 0");
    expect_load_error("range2.ini", "[task]\ntrain_frac = 1\n", 2,
                      "[task] train_frac = 1: must be in (0, 1)");
    expect_load_error("range3.ini", "[task]\ntrain_frac = 0\n", 2,
                      "[task] train_frac = 0: must be in (0, 1)");
    expect_load_error("range4.ini", "[run]\nthreads = 0\n", 2, "[run] threads = 0: must be in [1, 256]");
    expect_load_error("range5.ini", "[run]\nthreads = 257\n", 2,
                      "[run] threads = 257: must be in [1, 256]");
    expect_load_error("range6.ini", "[optim]\nbeta2 = 1\n", 2, "[optim] beta2 = 1: must be in [0, 1)");
    expect_load_error("range7.ini", "[optim]\neps = 0\n", 2, "[optim] eps = 0: must be > 0");
    expect_load_error("range8.ini", "[trace]\nvectors = -1\n", 2, "[trace] vectors = -1: must be >= 0");
    expect_load_error("range9.ini", "[schedule]\nmin_factor = 1.5\n", 2,
                      "[schedule] min_factor = 1.5: must be in [0, 1]");

    /* The bounds themselves are accepted where inclusive. */
    Config cfg;
    char err[512] = "";
    int status = load_text(&cfg, "range-ok.ini", "[run]\nthreads = 256\n[task]\np = 3\n[optim]\nbeta1 = 0\n",
                           err, sizeof err);
    EXPECT(status == 0, "inclusive bounds rejected: %s", err);
}

static void load_bad_doubles(void) {
    expect_load_error("dbl1.ini", "[optim]\nlr = abc\n", 2, "[optim] lr = abc: not a number");
    expect_load_error("dbl2.ini", "[optim]\nlr = 0.1x\n", 2, "[optim] lr = 0.1x: not a number");
    expect_load_error("dbl3.ini", "[optim]\nlr = nan\n", 2, "[optim] lr = nan: not a finite number");
    expect_load_error("dbl4.ini", "[optim]\nlr = inf\n", 2, "[optim] lr = inf: not a finite number");
    expect_load_error("dbl5.ini", "[optim]\nlr = 1e999\n", 2, "[optim] lr = 1e999: not a finite number");
}

static void load_bad_bool_enum_string(void) {
    expect_load_error("bool.ini", "[model]\nlayernorm = maybe\n", 2,
                      "[model] layernorm = maybe: not a boolean (use true, false, yes, no, 1 or 0)");
    expect_load_error("enum.ini", "[task]\nop = div\n", 2, "[task] op = div: must be one of add, sub, mul");
    expect_load_error("enumcase.ini", "[optim]\nname = AdamW\n", 2,
                      "[optim] name = AdamW: must be one of sgd, adam, adamw");

    char text[300], long_value[CONFIG_STR + 1];
    memset(long_value, 'a', CONFIG_STR);
    long_value[CONFIG_STR - 1] = '\0'; /* 127 bytes fit */
    snprintf(text, sizeof text, "[run]\nname = %s\n", long_value);
    Config cfg;
    char err[512] = "";
    EXPECT(load_text(&cfg, "str-ok.ini", text, err, sizeof err) == 0, "127 bytes rejected: %s", err);
    EXPECT(strlen(cfg.run_name) == CONFIG_STR - 1, "run_name length %zu", strlen(cfg.run_name));

    long_value[CONFIG_STR - 1] = 'a';
    long_value[CONFIG_STR] = '\0'; /* 128 bytes do not */
    snprintf(text, sizeof text, "[run]\nname = %s\n", long_value);
    EXPECT(load_text(&cfg, "str-long.ini", text, err, sizeof err) == -1, "128 bytes accepted");
    EXPECT(strstr(err, "str-long.ini:2: [run] name = aaaa") != NULL, "message '%s'", err);
    EXPECT(strstr(err, ": longer than 127 bytes") != NULL, "message '%s'", err);
}

static void load_unknown_key_suggestion(void) {
    expect_load_error("key1.ini", "[optim]\nname = adam\n\n\n\n\nlearning_rate = 0.1\n", 7,
                      "unknown key 'learning_rate' in [optim] (did you mean 'lr'?)");
    expect_load_error("key2.ini", "[model]\nd_modle = 64\n", 2,
                      "unknown key 'd_modle' in [model] (did you mean 'd_model'?)");
    expect_load_error("key3.ini", "[train]\nbatch = 64\n", 2,
                      "unknown key 'batch' in [train] (did you mean 'batch_size'?)");
    expect_load_error("key4.ini", "[optim]\nLR = 0.1\n", 2, "unknown key 'LR' in [optim] (did you mean 'lr'?)");
    expect_load_error("key5.ini", "[optim]\nfrobnicate = 1\n", 2, "unknown key 'frobnicate' in [optim]");
}

static void load_key_in_wrong_section(void) {
    expect_load_error("wrong1.ini", "[train]\nsteps = 100\nlr = 0.1\n", 3,
                      "unknown key 'lr' in [train] ('lr' belongs in [optim])");
    expect_load_error("wrong2.ini", "[model]\nname = mlp\n", 2,
                      "unknown key 'name' in [model] ('name' belongs in [run], [task], [optim], [schedule])");
    expect_load_error("wrong3.ini", "[train]\nlearning_rate = 0.1\n", 2,
                      "unknown key 'learning_rate' in [train] (did you mean 'lr' in [optim]?)");
    expect_load_error("wrong4.ini", "lr = 0.1\n[optim]\n", 1,
                      "key 'lr' comes before any [section] header ('lr' belongs in [optim])");
}

static void load_unknown_section(void) {
    expect_load_error("sec1.ini", "; header\n\n[optimiser]\nlr = 0.1\n", 3,
                      "unknown section [optimiser] (did you mean [optim]?)");
    expect_load_error("sec2.ini", "[run]\nseed = 1\n[trian]\n", 3,
                      "unknown section [trian] (did you mean [train]?)");
    expect_load_error("sec3.ini", "[widgets]\n", 1, "unknown section [widgets]");
}

static void load_duplicate_key(void) {
    expect_load_error("dup.ini", "[optim]\nlr = 0.1\nname = sgd\n[train]\nsteps = 10\n[optim]\nlr = 0.2\n", 7,
                      "[optim] lr is set twice (lines 2 and 7)");

    /* The same key name in different sections is not a duplicate. */
    Config cfg;
    char err[512] = "";
    int status = load_text(&cfg, "nodup.ini", "[optim]\nname = sgd\n[schedule]\nname = cosine\n", err,
                           sizeof err);
    EXPECT(status == 0, "load failed: %s", err);
}

static void load_syntax_and_long_line(void) {
    expect_load_error("syntax.ini", "[optim]\nlr = 0.1\nthis line has no equals sign\nlr = 0.2\n", 3,
                      "syntax error: expected '[section]', 'key = value' or a comment");
    expect_load_error("bracket.ini", "[optim\nlr = 0.1\n", 1,
                      "syntax error: expected '[section]', 'key = value' or a comment");

    char text[600];
    snprintf(text, sizeof text, "[run]\n; %0300d\n", 0);
    Config cfg;
    char err[512] = "";
    EXPECT(load_text(&cfg, "long.ini", text, err, sizeof err) == -1, "300-byte line accepted");
    EXPECT(strstr(err, "long.ini:2: line is longer than") != NULL, "message '%s'", err);
}

static void load_error_keeps_config(void) {
    Config before, after;
    char err[512] = "";
    config_defaults(&before);
    config_defaults(&after);
    const char *path = write_scratch("partial.ini", "[optim]\nlr = 0.5\nbeta1 = 2\n");
    EXPECT(config_load(&after, path, err, sizeof err) == -1, "invalid file loaded");
    EXPECT(memcmp(&before, &after, sizeof before) == 0, "config changed by a failed load (lr %g)",
           after.lr);
}

static void override_valid(void) {
    Config cfg;
    char err[512] = "";
    config_defaults(&cfg);
    EXPECT(config_override(&cfg, "optim.lr=0.01", err, sizeof err) == 0, "lr: %s", err);
    EXPECT(cfg.lr == 0.01, "lr %g", cfg.lr);
    EXPECT(config_override(&cfg, "model.layernorm=true", err, sizeof err) == 0, "layernorm: %s", err);
    EXPECT(cfg.layernorm == 1, "layernorm %d", cfg.layernorm);
    EXPECT(config_override(&cfg, " schedule.milestones = 10, 20 ", err, sizeof err) == 0,
           "milestones: %s", err);
    EXPECT(cfg.n_milestones == 2, "n_milestones %d", cfg.n_milestones);
    EXPECT(cfg.milestones[1] == 20, "milestones[1] %ld", cfg.milestones[1]);
    EXPECT(config_override(&cfg, "run.name=a=b", err, sizeof err) == 0, "name: %s", err);
    EXPECT(strcmp(cfg.run_name, "a=b") == 0, "run_name '%s'", cfg.run_name);
    EXPECT(config_override(&cfg, "trace.layers=blocks.0.mlp", err, sizeof err) == 0, "layers: %s", err);
    EXPECT(strcmp(cfg.trace_layers, "blocks.0.mlp") == 0, "trace_layers '%s'", cfg.trace_layers);
}

static void override_invalid(void) {
    static const struct {
        const char *assignment;
        const char *message;
    } cases[] = {
        {"optim.lr=abc", "override 'optim.lr=abc': not a number"},
        {"optim.lr=-1", "override 'optim.lr=-1': must be >= 0"},
        {"task.p=7.5", "override 'task.p=7.5': not an integer"},
        {"optim.lr", "override 'optim.lr': expected the form section.key=value"},
        {"lr=0.1", "override 'lr=0.1': expected the form section.key=value"},
        {".lr=0.1", "override '.lr=0.1': expected the form section.key=value"},
        {"optim.=0.1", "override 'optim.=0.1': expected the form section.key=value"},
        {"optim.learning_rate=0.1",
         "override 'optim.learning_rate=0.1': unknown key 'learning_rate' in [optim] (did you mean 'lr'?)"},
        {"train.lr=0.1", "override 'train.lr=0.1': unknown key 'lr' in [train] ('lr' belongs in [optim])"},
        {"optimiser.lr=0.1", "override 'optimiser.lr=0.1': unknown section [optimiser] (did you mean [optim]?)"},
        {"run.name=a ;b", "override 'run.name=a ;b': ';' at the start or after whitespace would start a comment"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        Config cfg, before;
        char err[512] = "";
        config_defaults(&cfg);
        config_defaults(&before);
        EXPECT(config_override(&cfg, cases[i].assignment, err, sizeof err) == -1, "'%s' accepted",
               cases[i].assignment);
        EXPECT(strcmp(err, cases[i].message) == 0, "message\n      got:      %s\n      expected: %s",
               err, cases[i].message);
        EXPECT(memcmp(&cfg, &before, sizeof cfg) == 0, "'%s' changed the config", cases[i].assignment);
    }
}

/* Applies overrides to defaults and checks that config_validate rejects the
 * result with exactly `message`. */
static void expect_invalid(const char *const *overrides, const char *message) {
    Config cfg;
    char err[512] = "";
    config_defaults(&cfg);
    for (const char *const *o = overrides; *o; o++)
        EXPECT(config_override(&cfg, *o, err, sizeof err) == 0, "override '%s': %s", *o, err);
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "validate accepted: %s", message);
    EXPECT(strcmp(err, message) == 0, "message\n      got:      %s\n      expected: %s", err, message);
}

static void validate_cross_key_failures(void) {
    expect_invalid((const char *const[]){"model.d_model=130", NULL},
                   "[model] d_model = 130 is not divisible by n_heads = 4");
    expect_invalid((const char *const[]){"schedule.name=warmup", NULL},
                   "[schedule] name = warmup requires warmup >= 1, got warmup = 0");
    expect_invalid((const char *const[]){"schedule.name=warmup_cosine", NULL},
                   "[schedule] name = warmup_cosine requires warmup >= 1, got warmup = 0");
    expect_invalid((const char *const[]){"schedule.warmup=100", "train.steps=100", NULL},
                   "[schedule] warmup = 100 must be less than [train] steps = 100");
    expect_invalid((const char *const[]){"schedule.milestones=100,300,200", NULL},
                   "[schedule] milestones must be strictly increasing, but 200 follows 300");
    expect_invalid((const char *const[]){"schedule.milestones=100,100", NULL},
                   "[schedule] milestones must be strictly increasing, but 100 follows 100");
    expect_invalid((const char *const[]){"schedule.name=multistep", NULL},
                   "[schedule] name = multistep requires at least one milestone");
    expect_invalid((const char *const[]){"train.accumulate=8", "train.batch_size=4", NULL},
                   "[train] accumulate = 8 exceeds batch_size = 4");
    expect_invalid((const char *const[]){"optim.name=sgd", "optim.nesterov=yes", NULL},
                   "[optim] nesterov = true requires momentum > 0");
    expect_invalid((const char *const[]){"run.name=a/b", NULL},
                   "[run] name = a/b: must be a single directory name, not a path");
    expect_invalid((const char *const[]){"run.out_dir=", NULL}, "[run] out_dir is empty");

    /* d_model divisibility only applies to the transformer. */
    Config cfg;
    char err[512] = "";
    config_defaults(&cfg);
    config_override(&cfg, "model.arch=mlp", err, sizeof err);
    config_override(&cfg, "model.d_model=130", err, sizeof err);
    EXPECT(config_validate(&cfg, err, sizeof err) == 0, "mlp with d_model 130 rejected: %s", err);
}

static void validate_rechecks_fields(void) {
    Config cfg;
    char err[512] = "";

    config_defaults(&cfg);
    cfg.trace_vectors = -1;
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "negative trace.vectors accepted");
    EXPECT(strcmp(err, "[trace] vectors = -1: must be >= 0") == 0, "message '%s'", err);

    config_defaults(&cfg);
    cfg.beta1 = 1.0;
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "beta1 = 1 accepted");
    EXPECT(strcmp(err, "[optim] beta1 = 1: must be in [0, 1)") == 0, "message '%s'", err);

    config_defaults(&cfg);
    cfg.lr = NAN;
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "NaN lr accepted");
    EXPECT(strcmp(err, "[optim] lr = nan: not a finite number") == 0, "message '%s'", err);

    config_defaults(&cfg);
    strcpy(cfg.op, "div");
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "op 'div' accepted");
    EXPECT(strcmp(err, "[task] op = div: must be one of add, sub, mul") == 0, "message '%s'", err);

    config_defaults(&cfg);
    cfg.n_milestones = CONFIG_MAX_MILESTONES + 1;
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "17 milestones accepted");
    EXPECT(strstr(err, "[schedule] milestones") == err, "message '%s'", err);

    config_defaults(&cfg);
    memset(cfg.out_dir, 'x', CONFIG_STR);
    EXPECT(config_validate(&cfg, err, sizeof err) == -1, "unterminated out_dir accepted");
    EXPECT(strcmp(err, "[run] out_dir is not NUL-terminated within 128 bytes") == 0, "message '%s'",
           err);
}

static void write_load_roundtrip(void) {
    Config original, loaded;
    char err[512] = "", path[512];
    config_defaults(&original);
    const char *overrides[] = {
        "run.name=roundtrip run", "run.seed=123456789", "task.train_frac=0.30000000000000004",
        "optim.lr=3e-4", "optim.eps=4.9406564584124654e-324", "optim.weight_decay=0.1",
        "optim.clip=-0", "model.layernorm=true", "schedule.name=multistep",
        "schedule.milestones=1000,2000,35000", "schedule.gamma=0.3333333333333333",
        "trace.layers=blocks.*.attn.W_[QK],unembed", "trace.prune=0.1",
    };
    for (size_t i = 0; i < sizeof overrides / sizeof overrides[0]; i++)
        EXPECT(config_override(&original, overrides[i], err, sizeof err) == 0, "override '%s': %s",
               overrides[i], err);
    original.beta2 = nextafter(0.98, 1.0);

    snprintf(path, sizeof path, "%s/resolved.ini", test_tmpdir());
    EXPECT(config_write(&original, path, err, sizeof err) == 0, "write failed: %s", err);

    /* Start from different defaults so every field must come from the file. */
    config_defaults(&loaded);
    EXPECT(config_load(&loaded, path, err, sizeof err) == 0, "reload failed: %s", err);
    EXPECT(memcmp(&original, &loaded, sizeof original) == 0, "reloaded config differs");
    EXPECT(loaded.beta2 == original.beta2, "beta2 %.17g vs %.17g", loaded.beta2, original.beta2);
    EXPECT(signbit(loaded.clip), "clip lost its sign: %g", loaded.clip);

    /* The file starts with the header and prints short decimals as written. */
    FILE *f = fopen(path, "r");
    char text[8192] = "";
    size_t n = f ? fread(text, 1, sizeof text - 1, f) : 0;
    if (f) fclose(f);
    text[n] = '\0';
    EXPECT(strncmp(text, "; resolved configuration written by specdyn\n", 44) == 0, "header: %.60s",
           text);
    EXPECT(strstr(text, "\nlr = 0.0003\n") != NULL, "lr line missing");
    EXPECT(strstr(text, "\nweight_decay = 0.1\n") != NULL, "weight_decay line missing");
    EXPECT(strstr(text, "\ntrain_frac = 0.30000000000000004\n") != NULL, "train_frac line missing");
    EXPECT(strstr(text, "\nmilestones = 1000, 2000, 35000\n") != NULL, "milestones line missing");
    EXPECT(strstr(text, "\n[trace]\n") != NULL, "[trace] section missing");

    /* No temporary file is left behind. */
    char tmp[600];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    EXPECT(access(tmp, F_OK) != 0, "temporary file %s left behind", tmp);

    /* Defaults round-trip too. */
    config_defaults(&original);
    EXPECT(config_write(&original, path, err, sizeof err) == 0, "write failed: %s", err);
    memset(&loaded, 0xff, sizeof loaded);
    config_defaults(&loaded);
    EXPECT(config_load(&loaded, path, err, sizeof err) == 0, "reload failed: %s", err);
    EXPECT(memcmp(&original, &loaded, sizeof original) == 0, "reloaded defaults differ");
}

static void write_failures(void) {
    Config cfg;
    char err[512] = "", path[512];
    config_defaults(&cfg);
    snprintf(path, sizeof path, "%s/no-such-dir/out.ini", test_tmpdir());
    EXPECT(config_write(&cfg, path, err, sizeof err) == -1, "write into a missing directory succeeded");
    EXPECT(strstr(err, "cannot write config") == err, "message '%s'", err);
    EXPECT(strstr(err, "No such file or directory") != NULL, "message '%s'", err);

    /* A string that would read back differently is rejected, and no file is left. */
    snprintf(path, sizeof path, "%s/unsafe.ini", test_tmpdir());
    strcpy(cfg.run_name, " padded");
    EXPECT(config_write(&cfg, path, err, sizeof err) == -1, "leading whitespace written");
    EXPECT(strcmp(err, "cannot write [run] name: must not start or end with whitespace") == 0,
           "message '%s'", err);
    EXPECT(access(path, F_OK) != 0, "file written despite the error");

    /* Sixteen 19-digit milestones do not fit libinih's line buffer. */
    config_defaults(&cfg);
    cfg.n_milestones = CONFIG_MAX_MILESTONES;
    for (int i = 0; i < CONFIG_MAX_MILESTONES; i++) cfg.milestones[i] = 1000000000000000000L + i;
    EXPECT(config_write(&cfg, path, err, sizeof err) == -1, "over-long line written");
    EXPECT(strstr(err, "cannot write [schedule] milestones: the line would be longer than") == err,
           "message '%s'", err);
}

const TestCase config_tests[] = {
    {"config defaults match schema", defaults_match_schema},
    {"config load valid file", load_valid_file},
    {"config load inline comments", load_inline_comments},
    {"config load crlf line endings", load_crlf_line_endings},
    {"config load milestones list", load_milestones_list},
    {"config load missing file", load_missing_file},
    {"config load bad integers", load_bad_integers},
    {"config load out of range", load_out_of_range},
    {"config load bad doubles", load_bad_doubles},
    {"config load bad bool enum string", load_bad_bool_enum_string},
    {"config unknown key suggestion", load_unknown_key_suggestion},
    {"config key in wrong section", load_key_in_wrong_section},
    {"config unknown section", load_unknown_section},
    {"config duplicate key", load_duplicate_key},
    {"config syntax error and long line", load_syntax_and_long_line},
    {"config failed load keeps config", load_error_keeps_config},
    {"config override valid", override_valid},
    {"config override invalid", override_invalid},
    {"config validate cross-key failures", validate_cross_key_failures},
    {"config validate rechecks fields", validate_rechecks_fields},
    {"config write load roundtrip", write_load_roundtrip},
    {"config write failures", write_failures},
    {NULL, NULL},
};
