/* Tests of the fast paths of the linear layer against references computed
 * another way. op_linear's thread-split products are checked against loops
 * in double precision, on shapes large enough that every split (by rows, by
 * columns) runs. op_linear_onehot is checked against op_linear on the dense
 * multi-hot matrix.
 *
 * Tolerance: float32 sums over at most a few hundred terms of products of
 * numbers in [-1, 1] round to about 1e-5 of the largest magnitude, so the
 * checks use rtol 1e-4 and atol 1e-4 · max |reference|. */
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"
#include "rng.h"
#include "test.h"

static void fill_uniform(Tensor *t, Rng *rng) {
    for (long i = 0; i < t->size; i++) t->data[i] = 2.0f * rng_uniform(rng) - 1.0f;
}

static double max_abs(const double *v, long n) {
    double m = 0.0;
    for (long i = 0; i < n; i++) m = fmax(m, fabs(v[i]));
    return m;
}

/* Check got[i] against want[i] for every i; names the first few mismatches. */
static void expect_all_close(const char *label, const float *got, const double *want, long n) {
    double atol = 1e-4 * fmax(1.0, max_abs(want, n));
    int failures = 0;
    for (long i = 0; i < n; i++)
        if (!test_close(got[i], want[i], 1e-4, atol) && failures++ < 3)
            EXPECT(0, "%s[%ld]: %.7g, reference %.7g", label, i, (double)got[i], want[i]);
}

/* y = x Wᵀ + b and its gradients for a seed dy, as op_linear computes them,
 * against double-precision loops. */
static void check_linear_against_loops(int rows, int in, int out) {
    Rng rng;
    rng_seed(&rng, (uint64_t)(rows * 7919 + in * 31 + out), 5);
    Arena keep;
    arena_init(&keep, 1 << 20);
    Tensor *x = tensor_new(&keep, 2, (int[]){rows, in}, 1);
    Tensor *w = tensor_new(&keep, 2, (int[]){out, in}, 1);
    Tensor *b = tensor_new(&keep, 1, (int[]){out}, 1);
    fill_uniform(x, &rng);
    fill_uniform(w, &rng);
    fill_uniform(b, &rng);
    float *dy = malloc((size_t)rows * out * sizeof(float));
    for (long i = 0; i < (long)rows * out; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    Graph g;
    graph_init(&g);
    g.recording = 1;
    Tensor *y = op_linear(&g, x, w, b);
    graph_backward_seeded(&g, y, dy);

    double *want_y = calloc((size_t)rows * out, sizeof(double));
    double *want_dx = calloc((size_t)rows * in, sizeof(double));
    double *want_dw = calloc((size_t)out * in, sizeof(double));
    double *want_db = calloc((size_t)out, sizeof(double));
    for (int r = 0; r < rows; r++)
        for (int o = 0; o < out; o++) {
            double acc = b->data[o];
            double g_ro = dy[(long)r * out + o];
            for (int k = 0; k < in; k++) {
                acc += (double)x->data[(long)r * in + k] * (double)w->data[(long)o * in + k];
                want_dx[(long)r * in + k] += g_ro * (double)w->data[(long)o * in + k];
                want_dw[(long)o * in + k] += g_ro * (double)x->data[(long)r * in + k];
            }
            want_y[(long)r * out + o] = acc;
            want_db[o] += g_ro;
        }
    char label[64];
    snprintf(label, sizeof label, "linear %dx%d->%d y", rows, in, out);
    expect_all_close(label, y->data, want_y, (long)rows * out);
    snprintf(label, sizeof label, "linear %dx%d->%d dx", rows, in, out);
    expect_all_close(label, x->grad, want_dx, (long)rows * in);
    snprintf(label, sizeof label, "linear %dx%d->%d dw", rows, in, out);
    expect_all_close(label, w->grad, want_dw, (long)out * in);
    snprintf(label, sizeof label, "linear %dx%d->%d db", rows, in, out);
    expect_all_close(label, b->grad, want_db, out);

    free(want_y);
    free(want_dx);
    free(want_dw);
    free(want_db);
    free(dy);
    graph_free(&g);
    arena_free(&keep);
}

static void linear_split_matches_loops(void) {
    /* The split needs at least 2 threads, whatever OMP_NUM_THREADS sets. */
    int threads = omp_get_max_threads();
    omp_set_num_threads(threads < 2 ? 2 : threads);
    check_linear_against_loops(300, 64, 96);  /* every product split by rows */
    check_linear_against_loops(40, 300, 120); /* forward and dx split by columns, dw by rows */
    check_linear_against_loops(513, 33, 17);  /* odd sizes, uneven blocks */
    check_linear_against_loops(5, 7, 3);      /* below the split size: one sgemm */
    omp_set_num_threads(threads);
}

/* op_linear_onehot gives op_linear's output and parameter gradients on the
 * dense matrix with ones at the listed columns. */
static void linear_onehot_matches_dense(void) {
    enum { ROWS = 600, FIELDS = 2, IN = 50, OUT = 64 };
    Rng rng;
    rng_seed(&rng, 3, 5);
    Arena keep;
    arena_init(&keep, 1 << 20);
    Tensor *w[2], *b[2];
    for (int v = 0; v < 2; v++) {
        w[v] = tensor_new(&keep, 2, (int[]){OUT, IN}, 1);
        b[v] = tensor_new(&keep, 1, (int[]){OUT}, 1);
    }
    fill_uniform(w[0], &rng);
    fill_uniform(b[0], &rng);
    memcpy(w[1]->data, w[0]->data, (size_t)w[0]->size * sizeof(float));
    memcpy(b[1]->data, b[0]->data, (size_t)b[0]->size * sizeof(float));
    int *ids = malloc((size_t)ROWS * FIELDS * sizeof(int));
    Tensor *x = tensor_new(&keep, 2, (int[]){ROWS, IN}, 0);
    memset(x->data, 0, (size_t)x->size * sizeof(float));
    for (int r = 0; r < ROWS; r++) {
        ids[r * FIELDS] = (int)rng_below(&rng, IN / 2);
        ids[r * FIELDS + 1] = IN / 2 + (int)rng_below(&rng, IN / 2);
        for (int f = 0; f < FIELDS; f++) x->data[(long)r * IN + ids[r * FIELDS + f]] = 1.0f;
    }
    float *dy = malloc((size_t)ROWS * OUT * sizeof(float));
    for (long i = 0; i < (long)ROWS * OUT; i++) dy[i] = 2.0f * rng_uniform(&rng) - 1.0f;

    /* The first backward stores the weight gradients, the second adds to them. */
    Graph g;
    graph_init(&g);
    g.recording = 1;
    Tensor *sparse = op_linear_onehot(&g, ids, ROWS, FIELDS, w[0], b[0]);
    Graph h;
    graph_init(&h);
    h.recording = 1;
    Tensor *dense = op_linear(&h, x, w[1], b[1]);
    double *want = malloc((size_t)ROWS * OUT * sizeof(double));
    for (long i = 0; i < (long)ROWS * OUT; i++) want[i] = dense->data[i];
    expect_all_close("linear_onehot y", sparse->data, want, (long)ROWS * OUT);
    for (int pass = 0; pass < 2; pass++) {
        graph_backward_seeded(&g, sparse, dy);
        graph_backward_seeded(&h, dense, dy);
        char label[64];
        snprintf(label, sizeof label, "linear_onehot dw, backward %d", pass + 1);
        for (long i = 0; i < w[1]->size; i++) want[i] = w[1]->grad[i];
        expect_all_close(label, w[0]->grad, want, w[1]->size);
        snprintf(label, sizeof label, "linear_onehot db, backward %d", pass + 1);
        for (long i = 0; i < b[1]->size; i++) want[i] = b[1]->grad[i];
        expect_all_close(label, b[0]->grad, want, b[1]->size);
    }

    free(want);
    free(dy);
    free(ids);
    graph_free(&g);
    graph_free(&h);
    arena_free(&keep);
}

const TestCase linear_path_tests[] = {
    {"linear split matches loops", linear_split_matches_loops},
    {"linear_onehot matches dense", linear_onehot_matches_dense},
    {NULL, NULL},
};
