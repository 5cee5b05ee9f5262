/* Image data loaders; see image_data.h. */
#include "image_data.h"

#include <dirent.h>
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <zlib.h>

#include "error.h"
#include "rng.h"

/* stb's implementations do not build cleanly under this project's warning set. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wshadow"
#pragma GCC diagnostic ignored "-Wdouble-promotion"
#pragma GCC diagnostic ignored "-Wmissing-prototypes"
#pragma GCC diagnostic ignored "-Wsign-compare"
#pragma GCC diagnostic ignored "-Wunused-parameter"
#pragma GCC diagnostic ignored "-Wunused-function"
#pragma GCC diagnostic ignored "-Wimplicit-fallthrough"
#define STB_IMAGE_IMPLEMENTATION
#define STBI_ONLY_PNG
#define STBI_ONLY_JPEG
#include <stb/stb_image.h>
#define STB_IMAGE_RESIZE_IMPLEMENTATION
#include <stb/stb_image_resize.h>
#pragma GCC diagnostic pop

#define IDX_IMAGES_MAGIC 0x00000803u
#define IDX_LABELS_MAGIC 0x00000801u
#define CIFAR_SIDE 32
#define CIFAR_PIXELS (3 * CIFAR_SIDE * CIFAR_SIDE)

void imageset_free(ImageSet *s) {
    free(s->pixels);
    free(s->labels);
    memset(s, 0, sizeof *s);
}

/* ---- IDX --------------------------------------------------------------------- */

/* Read exactly n bytes; -1 with a message for a corrupt stream or a short file. */
static int gz_read_exact(gzFile f, const char *path, void *buf, size_t n, const char *what, char *err, size_t errlen) {
    size_t done = 0;
    while (done < n) {
        unsigned chunk = n - done > (1u << 30) ? 1u << 30 : (unsigned)(n - done);
        int got = gzread(f, (char *)buf + done, chunk);
        if (got < 0) {
            int code;
            const char *msg = gzerror(f, &code);
            snprintf(err, errlen, "'%s': corrupt gzip stream while reading %s: %s", path, what, msg);
            return -1;
        }
        if (got == 0) {
            snprintf(err, errlen, "'%s' is truncated: %s needs %zu bytes, the file ends after %zu", path, what, n, done);
            return -1;
        }
        done += (size_t)got;
    }
    return 0;
}

static uint32_t big_endian32(const unsigned char *b) {
    return (uint32_t)b[0] << 24 | (uint32_t)b[1] << 16 | (uint32_t)b[2] << 8 | (uint32_t)b[3];
}

/* Open an IDX file, check its magic and read its dimensions (at most 3). Returns the gzFile or NULL. */
static gzFile idx_open(const char *path, uint32_t magic, uint32_t *dims, char *err, size_t errlen) {
    gzFile f = gzopen(path, "rb");
    if (!f) {
        snprintf(err, errlen, "cannot open '%s': %s", path, strerror(errno ? errno : ENOENT));
        return NULL;
    }
    unsigned char header[16];
    int ndim = (int)(magic & 0xff);
    if (gz_read_exact(f, path, header, 4 + 4 * (size_t)ndim, "the IDX header", err, errlen) != 0) {
        gzclose(f);
        return NULL;
    }
    uint32_t found = big_endian32(header);
    if (found != magic) {
        snprintf(err, errlen, "'%s' is not an IDX %s file: magic number 0x%08x, expected 0x%08x", path,
                 ndim == 1 ? "label" : "image", found, magic);
        gzclose(f);
        return NULL;
    }
    for (int d = 0; d < ndim; d++) dims[d] = big_endian32(header + 4 + 4 * d);
    return f;
}

/* The stream must end here: extra bytes mean the header does not describe the file. */
static int idx_expect_end(gzFile f, const char *path, char *err, size_t errlen) {
    char extra;
    int got = gzread(f, &extra, 1);
    if (got < 0) {
        int code;
        snprintf(err, errlen, "'%s': corrupt gzip stream: %s", path, gzerror(f, &code));
        return -1;
    }
    if (got > 0) {
        snprintf(err, errlen, "'%s' has bytes after the data its IDX header announces", path);
        return -1;
    }
    return 0;
}

int idx_load(const char *images_path, const char *labels_path, ImageSet *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    uint32_t idims[3], ldims[1];
    gzFile fi = idx_open(images_path, IDX_IMAGES_MAGIC, idims, err, errlen);
    if (!fi) return -1;
    gzFile fl = idx_open(labels_path, IDX_LABELS_MAGIC, ldims, err, errlen);
    if (!fl) {
        gzclose(fi);
        return -1;
    }
    int rc = -1;
    if (idims[0] != ldims[0]) {
        snprintf(err, errlen, "'%s' holds %u images but '%s' holds %u labels", images_path, idims[0], labels_path, ldims[0]);
        goto done;
    }
    if (idims[0] == 0 || idims[1] == 0 || idims[2] == 0 || idims[1] > 4096 || idims[2] > 4096) {
        snprintf(err, errlen, "'%s': invalid image dimensions %u x %u x %u", images_path, idims[0], idims[1], idims[2]);
        goto done;
    }
    out->n = idims[0];
    out->channels = 1;
    out->height = (int)idims[1];
    out->width = (int)idims[2];
    size_t bytes = (size_t)out->n * out->height * out->width;
    out->pixels = sd_malloc(bytes);
    unsigned char *raw_labels = sd_malloc((size_t)out->n);
    if (gz_read_exact(fi, images_path, out->pixels, bytes, "the pixels", err, errlen) != 0 ||
        idx_expect_end(fi, images_path, err, errlen) != 0 ||
        gz_read_exact(fl, labels_path, raw_labels, (size_t)out->n, "the labels", err, errlen) != 0 ||
        idx_expect_end(fl, labels_path, err, errlen) != 0) {
        free(raw_labels);
        imageset_free(out);
        goto done;
    }
    out->labels = sd_malloc((size_t)out->n * sizeof(int));
    for (long i = 0; i < out->n; i++) {
        out->labels[i] = raw_labels[i];
        if (raw_labels[i] + 1 > out->classes) out->classes = raw_labels[i] + 1;
    }
    free(raw_labels);
    rc = 0;
done:
    gzclose(fi);
    gzclose(fl);
    return rc;
}

/* ---- CIFAR ------------------------------------------------------------------- */

int cifar_load(const char *const *paths, int n_paths, int fine_label, ImageSet *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    long record = (fine_label ? 2 : 1) + CIFAR_PIXELS;
    long total = 0;
    for (int i = 0; i < n_paths; i++) {
        struct stat st;
        if (stat(paths[i], &st) != 0) {
            snprintf(err, errlen, "cannot open '%s': %s", paths[i], strerror(errno));
            return -1;
        }
        if (st.st_size == 0 || st.st_size % record != 0) {
            snprintf(err, errlen, "'%s' is not a CIFAR-%s binary batch: %lld bytes is not a multiple of the %ld-byte record",
                     paths[i], fine_label ? "100" : "10", (long long)st.st_size, record);
            return -1;
        }
        total += st.st_size / record;
    }
    out->n = total;
    out->channels = 3;
    out->height = out->width = CIFAR_SIDE;
    out->pixels = sd_malloc((size_t)total * CIFAR_PIXELS);
    out->labels = sd_malloc((size_t)total * sizeof(int));
    unsigned char *buf = sd_malloc((size_t)record);
    long at = 0;
    for (int i = 0; i < n_paths; i++) {
        FILE *f = fopen(paths[i], "rb");
        if (!f) {
            snprintf(err, errlen, "cannot open '%s': %s", paths[i], strerror(errno));
            goto fail;
        }
        /* at < total: a file that grew after it was sized must not overrun the buffers. */
        while (at < total && fread(buf, 1, (size_t)record, f) == (size_t)record) {
            out->labels[at] = buf[fine_label ? 1 : 0];
            if (out->labels[at] + 1 > out->classes) out->classes = out->labels[at] + 1;
            memcpy(out->pixels + (size_t)at * CIFAR_PIXELS, buf + record - CIFAR_PIXELS, CIFAR_PIXELS);
            at++;
        }
        int failed = ferror(f);
        fclose(f);
        if (failed) {
            snprintf(err, errlen, "cannot read '%s': %s", paths[i], strerror(errno));
            goto fail;
        }
    }
    free(buf);
    if (at != total) {
        snprintf(err, errlen, "CIFAR batches changed while being read: %ld of %ld records", at, total);
        imageset_free(out);
        return -1;
    }
    return 0;
fail:
    free(buf);
    imageset_free(out);
    return -1;
}

/* ---- subsets and labels -------------------------------------------------------- */

void imageset_keep_subset(ImageSet *s, long keep, long seed) {
    int *order = sd_malloc((size_t)s->n * sizeof *order);
    for (long i = 0; i < s->n; i++) order[i] = (int)i;
    Rng g;
    rng_seed(&g, (uint64_t)seed, RNG_STREAM_SPLIT);
    rng_shuffle(&g, order, s->n);
    size_t image = (size_t)s->channels * s->height * s->width;
    unsigned char *pixels = sd_malloc((size_t)keep * image);
    int *labels = sd_malloc((size_t)keep * sizeof *labels);
    for (long i = 0; i < keep; i++) {
        memcpy(pixels + (size_t)i * image, s->pixels + (size_t)order[i] * image, image);
        labels[i] = s->labels[order[i]];
    }
    free(order);
    free(s->pixels);
    free(s->labels);
    s->pixels = pixels;
    s->labels = labels;
    s->n = keep;
}

void imageset_corrupt_labels(ImageSet *s, int random_labels, double noise, long seed) {
    if (!random_labels && noise <= 0.0) return;
    Rng g;
    rng_seed(&g, (uint64_t)seed, RNG_STREAM_LABELS);
    for (long i = 0; i < s->n; i++) {
        if (random_labels || (double)rng_uniform(&g) < noise) s->labels[i] = (int)rng_below(&g, (uint64_t)s->classes);
    }
}

/* ---- resizing ---------------------------------------------------------------- */

void imageset_resize(ImageSet *s, int size) {
    if (size <= 0 || (s->height == size && s->width == size)) return;
    size_t plane = (size_t)s->height * s->width, new_plane = (size_t)size * size;
    unsigned char *resized = sd_malloc((size_t)s->n * s->channels * new_plane);
    for (long i = 0; i < s->n * s->channels; i++)
        stbir_resize_uint8(s->pixels + i * plane, s->width, s->height, 0, resized + i * new_plane, size, size, 0, 1);
    free(s->pixels);
    s->pixels = resized;
    s->height = s->width = size;
}

/* ---- folders ----------------------------------------------------------------- */

static int compare_names(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* Sorted entries of dir (skipping dot files) that are directories (want_dirs) or regular files. */
static int list_entries(const char *dir, int want_dirs, char ***names_out, char *err, size_t errlen) {
    DIR *d = opendir(dir);
    if (!d) {
        snprintf(err, errlen, "cannot open directory '%s': %s", dir, strerror(errno));
        return -1;
    }
    int n = 0, cap = 16;
    char **names = sd_malloc((size_t)cap * sizeof *names);
    struct dirent *ent;
    while ((ent = readdir(d))) {
        if (ent->d_name[0] == '.') continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, ent->d_name);
        struct stat st;
        if (stat(path, &st) != 0) continue;
        if (want_dirs ? !S_ISDIR(st.st_mode) : !S_ISREG(st.st_mode)) continue;
        if (n == cap) names = sd_realloc(names, (size_t)(cap *= 2) * sizeof *names);
        names[n++] = sd_strdup(ent->d_name);
    }
    closedir(d);
    qsort(names, (size_t)n, sizeof *names, compare_names);
    *names_out = names;
    return n;
}

void image_class_names_free(char **names, int n) {
    for (int i = 0; i < n; i++) free(names[i]);
    free(names);
}

int folder_load(const char *dir, int size, char **class_names, int n_class_names, ImageSet *out,
                char ***names_out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    char **classes = class_names;
    int n_classes = n_class_names;
    if (!classes) {
        n_classes = list_entries(dir, 1, &classes, err, errlen);
        if (n_classes < 0) return -1;
        if (n_classes < 2) {
            snprintf(err, errlen, "'%s' has %d class folders; image classification needs at least 2", dir, n_classes);
            image_class_names_free(classes, n_classes);
            return -1;
        }
    }
    out->channels = 3;
    out->height = out->width = size;
    out->classes = n_classes;
    long cap = 0;
    size_t image_bytes = (size_t)3 * size * size;
    unsigned char *plane_buf = sd_malloc(image_bytes);
    for (int c = 0; c < n_classes; c++) {
        char class_dir[4096];
        snprintf(class_dir, sizeof class_dir, "%s/%s", dir, classes[c]);
        char **files;
        int n_files = list_entries(class_dir, 0, &files, err, errlen);
        if (n_files < 0) goto fail;
        if (n_files == 0) {
            snprintf(err, errlen, "class folder '%s' holds no images", class_dir);
            image_class_names_free(files, 0);
            goto fail;
        }
        for (int f = 0; f < n_files; f++) {
            char path[8192];
            snprintf(path, sizeof path, "%s/%s", class_dir, files[f]);
            int w, h, comp;
            unsigned char *rgb = stbi_load(path, &w, &h, &comp, 3);
            if (!rgb) {
                snprintf(err, errlen, "'%s' is not a readable PNG or JPEG image: %s", path, stbi_failure_reason());
                image_class_names_free(files, n_files);
                goto fail;
            }
            /* Interleaved RGB, resized, then split into channel planes. */
            stbir_resize_uint8(rgb, w, h, 0, plane_buf, size, size, 0, 3);
            stbi_image_free(rgb);
            if (out->n == cap) {
                cap = cap ? 2 * cap : 256;
                out->pixels = sd_realloc(out->pixels, (size_t)cap * image_bytes);
                out->labels = sd_realloc(out->labels, (size_t)cap * sizeof(int));
            }
            unsigned char *dst = out->pixels + (size_t)out->n * image_bytes;
            for (long p = 0; p < (long)size * size; p++)
                for (int ch = 0; ch < 3; ch++) dst[(size_t)ch * size * size + p] = plane_buf[p * 3 + ch];
            out->labels[out->n++] = c;
        }
        image_class_names_free(files, n_files);
    }
    free(plane_buf);
    if (names_out && !class_names)
        *names_out = classes;
    else if (!class_names)
        image_class_names_free(classes, n_classes);
    return 0;
fail:
    free(plane_buf);
    if (!class_names) image_class_names_free(classes, n_classes);
    imageset_free(out);
    return -1;
}
