/* Image loaders and the image classification task, on small files each test
 * writes into its scratch directory: IDX (raw and gzip), CIFAR binary
 * batches and PNG folders, valid and broken. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "config.h"
#include "image_data.h"
#include "ops.h"
#include "rng.h"
#include "task.h"
#include "test.h"

#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#define STB_IMAGE_WRITE_IMPLEMENTATION
#include <stb/stb_image_write.h>
#pragma GCC diagnostic pop

#define ERR_LEN 512

static void scratch_path(char *buf, size_t len, const char *name) { snprintf(buf, len, "%s/%s", test_tmpdir(), name); }

static void write_bytes(const char *path, const void *data, size_t n, int gzip) {
    if (gzip) {
        gzFile f = gzopen(path, "wb");
        gzwrite(f, data, (unsigned)n);
        gzclose(f);
    } else {
        FILE *f = fopen(path, "wb");
        fwrite(data, 1, n, f);
        fclose(f);
    }
}

static void put_be32(unsigned char *b, unsigned v) {
    b[0] = (unsigned char)(v >> 24);
    b[1] = (unsigned char)(v >> 16);
    b[2] = (unsigned char)(v >> 8);
    b[3] = (unsigned char)v;
}

/* Write an IDX file of n images of rows × cols pixels (pixel byte i is
 * i mod 251) and an IDX file of n_labels labels (label i is i mod classes).
 * drop_bytes cuts that many bytes off the end of the image file. */
static void write_idx(const char *dir, const char *prefix, int n, int rows, int cols, int n_labels, int classes,
                      int gzip, int drop_bytes) {
    size_t size = 16 + (size_t)n * rows * cols;
    unsigned char *img = calloc(size, 1);
    put_be32(img, 0x803);
    put_be32(img + 4, (unsigned)n);
    put_be32(img + 8, (unsigned)rows);
    put_be32(img + 12, (unsigned)cols);
    for (size_t i = 16; i < size; i++) img[i] = (unsigned char)((i - 16) % 251);
    unsigned char *lab = calloc(8 + (size_t)n_labels, 1);
    put_be32(lab, 0x801);
    put_be32(lab + 4, (unsigned)n_labels);
    for (int i = 0; i < n_labels; i++) lab[8 + i] = (unsigned char)(i % classes);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s-images-idx3-ubyte%s", dir, prefix, gzip ? ".gz" : "");
    write_bytes(path, img, size - (size_t)drop_bytes, gzip);
    snprintf(path, sizeof path, "%s/%s-labels-idx1-ubyte%s", dir, prefix, gzip ? ".gz" : "");
    write_bytes(path, lab, 8 + (size_t)n_labels, gzip);
    free(img);
    free(lab);
}

static int load_scratch_idx(const char *prefix, int gzip, ImageSet *s, char *err) {
    char images[1024], labels[1024];
    snprintf(images, sizeof images, "%s/%s-images-idx3-ubyte%s", test_tmpdir(), prefix, gzip ? ".gz" : "");
    snprintf(labels, sizeof labels, "%s/%s-labels-idx1-ubyte%s", test_tmpdir(), prefix, gzip ? ".gz" : "");
    return idx_load(images, labels, s, err, ERR_LEN);
}

static void idx_raw_and_gzip(void) {
    for (int gzip = 0; gzip < 2; gzip++) {
        write_idx(test_tmpdir(), gzip ? "okgz" : "ok", 3, 4, 5, 3, 3, gzip, 0);
        ImageSet s;
        char err[ERR_LEN] = "";
        EXPECT(load_scratch_idx(gzip ? "okgz" : "ok", gzip, &s, err) == 0, "gzip %d: %s", gzip, err);
        EXPECT(s.n == 3 && s.channels == 1 && s.height == 4 && s.width == 5, "gzip %d: shape %ld %d %d %d", gzip, s.n,
               s.channels, s.height, s.width);
        EXPECT(s.classes == 3, "gzip %d: %d classes", gzip, s.classes);
        EXPECT(s.pixels && s.pixels[21] == 21 && s.labels[2] == 2, "gzip %d: wrong pixel or label values", gzip);
        imageset_free(&s);
    }
}

static void idx_truncated(void) {
    write_idx(test_tmpdir(), "short", 3, 4, 5, 3, 3, 0, 7);
    ImageSet s;
    char err[ERR_LEN] = "";
    EXPECT(load_scratch_idx("short", 0, &s, err) != 0, "a truncated IDX file loaded");
    EXPECT(strstr(err, "truncated") && strstr(err, "short-images"), "message: %s", err);
}

static void idx_wrong_magic(void) {
    char path[1024], labels[1024];
    write_idx(test_tmpdir(), "magic", 2, 3, 3, 2, 2, 0, 0);
    scratch_path(path, sizeof path, "magic-images-idx3-ubyte");
    scratch_path(labels, sizeof labels, "magic-labels-idx1-ubyte");
    ImageSet s;
    char err[ERR_LEN] = "";
    /* Labels given as images: magic 0x801 where 0x803 is expected. */
    EXPECT(idx_load(labels, path, &s, err, ERR_LEN) != 0, "swapped IDX files loaded");
    EXPECT(strstr(err, "magic") && strstr(err, "magic-labels"), "message: %s", err);
}

static void idx_count_mismatch(void) {
    write_idx(test_tmpdir(), "count", 3, 4, 4, 2, 2, 1, 0);
    ImageSet s;
    char err[ERR_LEN] = "";
    EXPECT(load_scratch_idx("count", 1, &s, err) != 0, "3 images with 2 labels loaded");
    EXPECT(strstr(err, "3 images") && strstr(err, "2 labels"), "message: %s", err);
}

static void idx_corrupt_gzip(void) {
    write_idx(test_tmpdir(), "corrupt", 40, 8, 8, 40, 4, 1, 0);
    char path[1024];
    scratch_path(path, sizeof path, "corrupt-images-idx3-ubyte.gz");
    FILE *f = fopen(path, "r+b");
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    /* Overwrite the middle of the deflate data, past the 10-byte gzip header. */
    fseek(f, size / 2, SEEK_SET);
    for (int i = 0; i < 8; i++) fputc(0xff, f);
    fclose(f);
    ImageSet s;
    char err[ERR_LEN] = "";
    EXPECT(load_scratch_idx("corrupt", 1, &s, err) != 0, "a corrupt gzip stream loaded");
    EXPECT(strstr(err, "corrupt-images") && strstr(err, "corrupt gzip"), "message: %s", err);
}

static void cifar_batches(void) {
    char path[1024];
    scratch_path(path, sizeof path, "cifar_ok.bin");
    size_t record = 1 + 3072;
    unsigned char *data = calloc(2 * record, 1);
    data[0] = 7;
    data[record] = 2;
    data[1] = 200; /* first red pixel of image 0 */
    data[record + 1 + 1024] = 99; /* first green pixel of image 1 */
    write_bytes(path, data, 2 * record, 0);
    ImageSet s;
    char err[ERR_LEN] = "";
    const char *paths[1] = {path};
    EXPECT(cifar_load(paths, 1, 0, &s, err, ERR_LEN) == 0, "%s", err);
    EXPECT(s.n == 2 && s.channels == 3 && s.height == 32 && s.labels[0] == 7 && s.labels[1] == 2 && s.classes == 8,
           "records read wrongly");
    EXPECT(s.pixels[0] == 200 && s.pixels[3072 + 1024] == 99, "pixel layout is not [N, C, H, W]");
    imageset_free(&s);

    scratch_path(path, sizeof path, "cifar_bad.bin");
    write_bytes(path, data, 2 * record - 5, 0);
    EXPECT(cifar_load(paths, 1, 0, &s, err, ERR_LEN) != 0, "a CIFAR file of partial records loaded");
    EXPECT(strstr(err, "cifar_bad.bin") && strstr(err, "multiple"), "message: %s", err);
    free(data);
}

static void write_png(const char *dir, const char *name, int w, int h, unsigned char value) {
    unsigned char *rgb = malloc((size_t)w * h * 3);
    memset(rgb, value, (size_t)w * h * 3);
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    stbi_write_png(path, w, h, 3, rgb, w * 3);
    free(rgb);
}

static void make_dir(char *buf, size_t len, const char *name) {
    scratch_path(buf, len, name);
    mkdir(buf, 0777);
}

static void folder_of_pngs(void) {
    char root[1024], cat[1024], dog[1024];
    make_dir(root, sizeof root, "folder");
    make_dir(cat, sizeof cat, "folder/cat");
    make_dir(dog, sizeof dog, "folder/dog");
    write_png(cat, "a.png", 6, 4, 10);
    write_png(cat, "b.png", 5, 5, 20);
    write_png(dog, "c.png", 3, 7, 200);
    ImageSet s;
    char err[ERR_LEN] = "";
    char **names = NULL;
    EXPECT(folder_load(root, 4, NULL, 0, &s, &names, err, ERR_LEN) == 0, "%s", err);
    EXPECT(s.n == 3 && s.classes == 2 && s.channels == 3 && s.height == 4 && s.width == 4, "folder shape %ld %d", s.n,
           s.classes);
    EXPECT(names && strcmp(names[0], "cat") == 0 && strcmp(names[1], "dog") == 0, "class names not sorted");
    EXPECT(s.labels[0] == 0 && s.labels[2] == 1 && s.pixels[2 * 48] == 200, "labels or pixels wrong");
    imageset_free(&s);
    image_class_names_free(names, 2);

    write_bytes(strcat(strcpy(root, dog), "/notes.png"), "not an image", 12, 0);
    scratch_path(root, sizeof root, "folder");
    EXPECT(folder_load(root, 4, NULL, 0, &s, NULL, err, ERR_LEN) != 0, "a non-image file loaded");
    EXPECT(strstr(err, "notes.png") && strstr(err, "not a readable"), "message: %s", err);

    char empty[1024], bird[1024];
    make_dir(empty, sizeof empty, "folder2");
    make_dir(bird, sizeof bird, "folder2/bird");
    make_dir(bird, sizeof bird, "folder2/fish");
    write_png(bird, "x.png", 2, 2, 1);
    EXPECT(folder_load(empty, 4, NULL, 0, &s, NULL, err, ERR_LEN) != 0, "an empty class folder loaded");
    EXPECT(strstr(err, "folder2/bird") && strstr(err, "no images"), "message: %s", err);
}

/* ---- the task --------------------------------------------------------------- */

static Task *tiny_task(ParamStore *ps, const char *const *overrides, int n_overrides, char *err) {
    write_idx(test_tmpdir(), "train", 40, 12, 12, 40, 4, 1, 0);
    write_idx(test_tmpdir(), "t10k", 10, 12, 12, 10, 4, 1, 0);
    Config cfg;
    config_defaults(&cfg);
    char assignment[1100];
    snprintf(assignment, sizeof assignment, "task.path=%s", test_tmpdir());
    config_override(&cfg, "task.name=images", err, ERR_LEN);
    config_override(&cfg, "task.dataset=mnist", err, ERR_LEN);
    config_override(&cfg, assignment, err, ERR_LEN);
    config_override(&cfg, "model.arch=lenet", err, ERR_LEN);
    for (int i = 0; i < n_overrides; i++) EXPECT(config_override(&cfg, overrides[i], err, ERR_LEN) == 0, "%s", err);
    EXPECT(config_validate(&cfg, err, ERR_LEN) == 0, "%s", err);
    return task_create(&cfg, ps, err, ERR_LEN);
}

static void images_task_forward(void) {
    ParamStore *ps = calloc(1, sizeof *ps);
    char err[ERR_LEN] = "";
    static const char *const overrides[] = {"task.augment=true", "model.dropout=0.2"};
    Task *t = tiny_task(ps, overrides, 2, err);
    EXPECT(t != NULL, "%s", err);
    if (!t) return;
    EXPECT(t->n_train == 40 && t->n_val == 10, "split sizes %ld %ld", t->n_train, t->n_val);
    Graph g;
    graph_init(&g);
    long idx[8] = {0, 1, 2, 3, 4, 5, 6, 7}, correct = 0;
    float losses[2];
    for (int rep = 0; rep < 2; rep++) {
        graph_reset(&g);
        rng_seed(&g.rng, 9, RNG_STREAM_STEP + 3);
        params_zero_grad(ps);
        Tensor *loss = t->forward(t, &g, SPLIT_TRAIN, idx, 8, &correct);
        graph_backward(&g, loss);
        losses[rep] = loss->data[0];
    }
    EXPECT(losses[0] == losses[1], "same rng seed gave losses %g and %g", (double)losses[0], (double)losses[1]);
    g.training = 0;
    g.recording = 0;
    graph_reset(&g);
    Tensor *val = t->forward(t, &g, SPLIT_VAL, idx, 8, &correct);
    EXPECT(val->data[0] > 0.0f && val->data[0] < 20.0f, "validation loss %g", (double)val->data[0]);
    graph_free(&g);
    task_free(t);
    params_free(ps);
    free(ps);
}

/* The low-rank evaluation of a net with batch norm fills the top/bottom-half
 * columns. The evaluation (weight edit, recomputed batch-norm statistics,
 * restore) leaves training untouched, so the final checkpoint has the same
 * tensors, bit for bit, as that of a run without it. */
static void lowrank_eval_with_batchnorm(void) {
    write_idx(test_tmpdir(), "train", 40, 12, 12, 40, 4, 1, 0);
    write_idx(test_tmpdir(), "t10k", 10, 12, 12, 10, 4, 1, 0);
    char cmd[4096], out[8192];
    const char *prunes[2] = {"0.5", "0"};
    for (int i = 0; i < 2; i++) {
        snprintf(cmd, sizeof cmd,
                 "./train tests/fixtures/tiny.ini task.name=images task.dataset=mnist task.path=%s model.arch=resnet20 "
                 "model.width=0.25 train.steps=6 train.batch_size=8 train.eval_every=3 train.checkpoint_every=3 "
                 "trace.every=3 trace.prune=%s optim.name=sgd optim.lr=0.05 schedule.name=constant schedule.warmup=0 run.out_dir=%s/lowrank run.name=prune%d",
                 test_tmpdir(), prunes[i], test_tmpdir(), i);
        int status = test_run(cmd, out, sizeof out);
        EXPECT(status == 0, "training with trace.prune=%s failed: %s", prunes[i], out);
    }
    char a[1024], b[1024], detail[512] = "";
    snprintf(a, sizeof a, "%s/lowrank/prune0/checkpoints/step_00000006.safetensors", test_tmpdir());
    snprintf(b, sizeof b, "%s/lowrank/prune1/checkpoints/step_00000006.safetensors", test_tmpdir());
    EXPECT(test_same_tensors(a, b, detail, sizeof detail), "the low-rank evaluation changed training: %s", detail);
    /* The row of step 6 has 8 values after the 8 standard columns. */
    snprintf(cmd, sizeof cmd, "awk -F, '$1 == 6 { n = 0; for (i = 9; i <= NF; i++) n += ($i != \"\"); print n }' "
                              "%s/lowrank/prune0/metrics.csv", test_tmpdir());
    test_run(cmd, out, sizeof out);
    EXPECT(atoi(out) == 8, "step 6 has %d low-rank values, expected 8", atoi(out));
}

static void images_task_labels(void) {
    ParamStore *ps = calloc(1, sizeof *ps);
    char err[ERR_LEN] = "";
    static const char *const subset[] = {"task.train_subset=10", "task.random_labels=true", "model.arch=mlp",
                                         "model.hidden=8", "model.depth=1"};
    Task *t = tiny_task(ps, subset, 5, err);
    EXPECT(t && t->n_train == 10, "train_subset=10: %s", t ? "wrong count" : err);
    if (t) task_free(t);
    params_free(ps);
    static const char *const too_many[] = {"task.train_subset=41"};
    t = tiny_task(ps, too_many, 1, err);
    EXPECT(!t && strstr(err, "train_subset"), "train_subset above the set size: '%s'", err);
    params_free(ps);
    free(ps);
}

static void fashion_mnist_package(void) {
    ImageSet s;
    char err[ERR_LEN] = "";
    int rc = idx_load("/usr/share/datasets/fashion-mnist/t10k-images-idx3-ubyte.gz",
                      "/usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz", &s, err, ERR_LEN);
    EXPECT(rc == 0, "%s (Debian package dataset-fashion-mnist)", err);
    if (rc != 0) return;
    EXPECT(s.n == 10000 && s.height == 28 && s.width == 28 && s.classes == 10, "test set %ld images %dx%d, %d classes",
           s.n, s.height, s.width, s.classes);
    imageset_free(&s);
}


static void fill_labels(ImageSet *s, long n) {
    memset(s, 0, sizeof *s);
    s->n = n;
    s->channels = s->height = s->width = 1;
    s->classes = 10;
    s->pixels = malloc((size_t)n);
    s->labels = malloc((size_t)n * sizeof(int));
    for (long i = 0; i < n; i++) {
        s->pixels[i] = (unsigned char)i;
        s->labels[i] = (int)(i % 10);
    }
}

static void images_random_labels(void) {
    ImageSet a, b;
    fill_labels(&a, 1000);
    fill_labels(&b, 1000);
    imageset_corrupt_labels(&a, 1, 0.0, 4);
    imageset_corrupt_labels(&b, 1, 0.0, 4);
    long changed = 0, counts[10] = {0};
    for (long i = 0; i < 1000; i++) {
        changed += a.labels[i] != (int)(i % 10);
        counts[a.labels[i]]++;
        EXPECT(a.labels[i] == b.labels[i], "seed 4 gave two different labels for image %ld", i);
    }
    /* Uniform draws keep the true label one time in ten. */
    EXPECT(changed > 850 && changed < 950, "%ld of 1000 random labels differ from the true ones", changed);
    for (int c = 0; c < 10; c++) EXPECT(counts[c] > 50, "class %d drawn %ld times of 1000", c, counts[c]);
    imageset_free(&a);
    imageset_free(&b);

    fill_labels(&a, 1000);
    imageset_corrupt_labels(&a, 0, 0.2, 4);
    changed = 0;
    for (long i = 0; i < 1000; i++) changed += a.labels[i] != (int)(i % 10);
    /* Redrawn with probability 0.2, of which 9 in 10 change: about 180. */
    EXPECT(changed > 130 && changed < 230, "label_noise 0.2 changed %ld of 1000 labels", changed);
    imageset_free(&a);

    fill_labels(&a, 1000);
    for (long i = 0; i < 1000; i++) a.labels[i] = (int)i; /* the label names the image */
    imageset_keep_subset(&a, 100, 4);
    int seen[1000] = {0}, repeated = 0, mismatched = 0;
    for (long i = 0; i < 100; i++) {
        repeated |= seen[a.labels[i]]++ > 0;
        mismatched |= a.pixels[i] != (unsigned char)a.labels[i];
    }
    EXPECT(!mismatched, "subset separated images from their labels");
    EXPECT(a.n == 100 && !repeated, "subset has %ld images", a.n);
    imageset_free(&a);
}

const TestCase images_tests[] = {
    {"images idx raw and gzip", idx_raw_and_gzip},
    {"images idx truncated", idx_truncated},
    {"images idx wrong magic", idx_wrong_magic},
    {"images idx count mismatch", idx_count_mismatch},
    {"images idx corrupt gzip", idx_corrupt_gzip},
    {"images cifar batches", cifar_batches},
    {"images folder of pngs", folder_of_pngs},
    {"images task forward", images_task_forward},
    {"images task labels", images_task_labels},
    {"images low-rank evaluation with batch norm", lowrank_eval_with_batchnorm},
    {"images fashion-mnist package", fashion_mnist_package},
    {"images random labels", images_random_labels},
    {NULL, NULL},
};
