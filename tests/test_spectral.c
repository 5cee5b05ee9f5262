/* Spectral measures with known values, singular vector agreement and
 * layer alignment (trace/spectral.h). */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "rng.h"
#include "spectral.h"
#include "test.h"
#include "trace.h"

#define TOL 1e-6

static void expect_metrics(const char *what, SpectralMetrics got, double frobenius, double spectral, double nuclear,
                           double effective_rank, double rank90, double stable_rank, double tol) {
    EXPECT(test_close(got.frobenius, frobenius, tol, tol), "%s: Frobenius norm %.9g, expected %.9g", what,
           got.frobenius, frobenius);
    EXPECT(test_close(got.spectral, spectral, tol, tol), "%s: spectral norm %.9g, expected %.9g", what, got.spectral,
           spectral);
    EXPECT(test_close(got.nuclear, nuclear, tol, tol), "%s: nuclear norm %.9g, expected %.9g", what, got.nuclear,
           nuclear);
    EXPECT(test_close(got.effective_rank, effective_rank, tol, tol), "%s: effective rank %.9g, expected %.9g", what,
           got.effective_rank, effective_rank);
    EXPECT(test_close(got.rank90, rank90, tol, tol), "%s: 90%% rank %.9g, expected %.9g", what, got.rank90, rank90);
    EXPECT(test_close(got.stable_rank, stable_rank, tol, tol), "%s: stable rank %.9g, expected %.9g", what,
           got.stable_rank, stable_rank);
}

/* Singular values of a row-major m × n matrix via the tracer's SVD. */
static void singular_values(const float *a, int m, int n, float *s) {
    char err[256] = "";
    int rc = svd_top(a, m, n, 0, s, NULL, NULL, err, sizeof err);
    EXPECT(rc == 0, "svd_top failed: %s", err);
}

static void random_matrix(float *a, int count, uint64_t seed) {
    Rng rng;
    rng_seed(&rng, seed, 0);
    for (int i = 0; i < count; i++) a[i] = (float)rng_normal(&rng);
}

static void metrics_identity(void) {
    float a[16] = {0}, s[4];
    for (int i = 0; i < 4; i++) a[i * 4 + i] = 1.0f;
    singular_values(a, 4, 4, s);
    expect_metrics("4 x 4 identity", spectral_metrics(s, 4), 2.0, 1.0, 4.0, 1.0, 1.0, 1.0, TOL);
}

static void metrics_rank_one(void) {
    /* x yᵀ with |x| = 3, |y| = 2 has the single singular value 6. */
    const float x[3] = {1, 2, 2}, y[5] = {0, 2, 0, 0, 0};
    float a[15], s[3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 5; j++) a[i * 5 + j] = x[i] * y[j];
    singular_values(a, 3, 5, s);
    expect_metrics("3 x 5 rank 1", spectral_metrics(s, 3), 6.0, 6.0, 6.0, 1.0 / 3, 1.0 / 3, 1.0 / 3, 1e-5);
}

static void metrics_chosen_spectrum(void) {
    /* A 4 × 6 matrix with the diagonal 1, 4, 2, 3: singular values 4, 3, 2, 1. */
    float a[24] = {0}, s[4];
    const float diagonal[4] = {1, 4, 2, 3};
    for (int i = 0; i < 4; i++) a[i * 6 + i] = diagonal[i];
    singular_values(a, 4, 6, s);
    for (int i = 0; i < 4; i++) EXPECT(test_close(s[i], 4 - i, TOL, TOL), "s[%d] = %g, expected %d", i, (double)s[i], 4 - i);
    double entropy = 0.0;
    for (int i = 1; i <= 4; i++) entropy -= i / 10.0 * log(i / 10.0);
    /* Cumulative sums 4, 7, 9, 10: three values hold 90 % of 10. */
    expect_metrics("diagonal 4, 3, 2, 1", spectral_metrics(s, 4), sqrt(30.0), 4.0, 10.0, exp(entropy) / 4, 0.75,
                   30.0 / 16.0 / 4, TOL);
}

static void metrics_orthogonal(void) {
    /* Product of two plane rotations: every singular value is 1. */
    const double c1 = cos(0.7), s1 = sin(0.7), c2 = cos(-1.3), s2 = sin(-1.3);
    const double r1[9] = {c1, -s1, 0, s1, c1, 0, 0, 0, 1}, r2[9] = {1, 0, 0, 0, c2, -s2, 0, s2, c2};
    float a[9], s[3];
    for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
            double sum = 0.0;
            for (int l = 0; l < 3; l++) sum += r1[i * 3 + l] * r2[l * 3 + j];
            a[i * 3 + j] = (float)sum;
        }
    singular_values(a, 3, 3, s);
    expect_metrics("3 x 3 orthogonal", spectral_metrics(s, 3), sqrt(3.0), 1.0, 3.0, 1.0, 1.0, 1.0, 1e-5);
}

static void metrics_zero_matrix(void) {
    float a[12] = {0}, s[3];
    singular_values(a, 3, 4, s);
    SpectralMetrics got = spectral_metrics(s, 3);
    expect_metrics("3 x 4 zero", got, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0);
    EXPECT(!isnan(got.effective_rank) && !isnan(got.rank90) && !isnan(got.stable_rank), "zero matrix gave NaN");
    EXPECT(spectral_effective_rank(s, 3) == 0.0, "effective rank of zero matrix %g", spectral_effective_rank(s, 3));
}

static void metrics_row_vector(void) {
    float a[2] = {3, 4}, s[1];
    singular_values(a, 1, 2, s);
    expect_metrics("1 x 2 row", spectral_metrics(s, 1), 5.0, 5.0, 5.0, 1.0, 1.0, 1.0, TOL);
}

static void metrics_rank_deficient(void) {
    /* Exact zeros add nothing to the entropy: two equal values out of four. */
    const float s[4] = {2, 2, 0, 0};
    expect_metrics("spectrum 2, 2, 0, 0", spectral_metrics(s, 4), sqrt(8.0), 2.0, 4.0, 0.5, 0.5, 0.5, TOL);
}

static void metrics_non_finite_input(void) {
    const float s[2] = {NAN, 1};
    SpectralMetrics got = spectral_metrics(s, 2);
    EXPECT(isnan(got.effective_rank), "NaN spectrum gave effective rank %g", got.effective_rank);
}

/* SVD of a random m × n matrix with k vectors. */
static void random_svd(int m, int n, int k, uint64_t seed, float *s, float *u, float *vt) {
    float *a = malloc((size_t)m * n * sizeof(float));
    random_matrix(a, m * n, seed);
    char err[256] = "";
    EXPECT(svd_top(a, m, n, k, s, u, vt, err, sizeof err) == 0, "svd_top failed: %s", err);
    free(a);
}

static void sva_self_is_identity(void) {
    enum { M = 7, N = 5, K = 4 };
    float s[N], u[M * K], vt[K * N], sva[K * K], diag[K];
    random_svd(M, N, K, 11, s, u, vt);
    spectral_sva(u, vt, u, vt, M, N, K, K, sva);
    for (int a = 0; a < K; a++)
        for (int b = 0; b < K; b++) {
            double expected = a == b ? 1.0 : 0.0;
            EXPECT(test_close(sva[a * K + b], expected, 1e-5, 1e-5), "SVA[%d][%d] = %g, expected %g", a, b,
                   (double)sva[a * K + b], expected);
        }
    spectral_sva_diagonal(u, vt, u, vt, M, N, K, K, diag);
    for (int a = 0; a < K; a++) EXPECT(test_close(diag[a], 1.0, 1e-5, 1e-5), "SVA diagonal[%d] = %g", a, (double)diag[a]);
}

static void sva_ignores_sign_flips(void) {
    enum { M = 6, N = 6, K = 3 };
    float s[N], u[M * K], vt[K * N], u2[M * K], vt2[K * N], diag[K];
    random_svd(M, N, K, 12, s, u, vt);
    for (int i = 0; i < M * K; i++) u2[i] = -u[i];
    for (int i = 0; i < K * N; i++) vt2[i] = -vt[i];
    spectral_sva_diagonal(u2, vt2, u, vt, M, N, K, K, diag);
    for (int a = 0; a < K; a++) EXPECT(test_close(diag[a], 1.0, 1e-5, 1e-5), "SVA diagonal[%d] = %g", a, (double)diag[a]);
}

static void sva_top_k_of_more_vectors(void) {
    /* k < stored vectors: only the first k columns and rows enter. */
    enum { M = 5, N = 8, KV = 4, K = 2 };
    float s[M], u[M * KV], vt[KV * N], sva[K * K];
    random_svd(M, N, KV, 13, s, u, vt);
    spectral_sva(u, vt, u, vt, M, N, KV, K, sva);
    EXPECT(test_close(sva[0], 1.0, 1e-5, 1e-5) && test_close(sva[3], 1.0, 1e-5, 1e-5), "diagonal %g %g", (double)sva[0],
           (double)sva[3]);
    EXPECT(fabsf(sva[1]) < 1e-5f && fabsf(sva[2]) < 1e-5f, "off-diagonal %g %g", (double)sva[1], (double)sva[2]);
}

static void alignment_with_transpose_is_one(void) {
    /* W = U S Vᵀ and the next layer Wᵀ = V S Uᵀ: the right singular vectors
     * of Wᵀ are the left ones of W, so the diagonal is 1. */
    enum { M = 6, N = 4, K = 3 };
    float w[M * N], wt[N * M];
    random_matrix(w, M * N, 14);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) wt[j * M + i] = w[i * N + j];
    float s_w[N], u_w[M * K], vt_w[K * N], s_wt[N], u_wt[N * K], vt_wt[K * M], diag[K];
    char err[256] = "";
    EXPECT(svd_top(w, M, N, K, s_w, u_w, vt_w, err, sizeof err) == 0, "svd_top(W) failed: %s", err);
    EXPECT(svd_top(wt, N, M, K, s_wt, u_wt, vt_wt, err, sizeof err) == 0, "svd_top(Wᵀ) failed: %s", err);
    spectral_alignment_diagonal(u_w, K, vt_wt, K, M, K, diag);
    for (int i = 0; i < K; i++) EXPECT(test_close(diag[i], 1.0, 1e-5, 1e-5), "alignment[%d] = %g", i, (double)diag[i]);
    EXPECT(test_close(spectral_alignment_score(diag, K), 1.0, 1e-5, 1e-5), "score %g",
           spectral_alignment_score(diag, K));
}

static void alignment_orthogonal_is_zero(void) {
    /* u_i = e_i and v_i = e_{i+2} in R^4 never overlap. */
    const float u[4 * 2] = {1, 0, 0, 1, 0, 0, 0, 0};
    const float vt[2 * 4] = {0, 0, 1, 0, 0, 0, 0, 1};
    float diag[2];
    spectral_alignment_diagonal(u, 2, vt, 2, 4, 2, diag);
    EXPECT(diag[0] == 0.0f && diag[1] == 0.0f, "alignment %g %g", (double)diag[0], (double)diag[1]);
    EXPECT(spectral_alignment_score(diag, 0) == 0.0, "score of an empty diagonal");
}

const TestCase spectral_tests[] = {
    {"spectral identity", metrics_identity},
    {"spectral rank one", metrics_rank_one},
    {"spectral chosen spectrum", metrics_chosen_spectrum},
    {"spectral orthogonal", metrics_orthogonal},
    {"spectral zero matrix", metrics_zero_matrix},
    {"spectral 1 x n row", metrics_row_vector},
    {"spectral rank deficient", metrics_rank_deficient},
    {"spectral NaN input", metrics_non_finite_input},
    {"sva self is identity", sva_self_is_identity},
    {"sva ignores sign flips", sva_ignores_sign_flips},
    {"sva top k of more vectors", sva_top_k_of_more_vectors},
    {"alignment with transpose is one", alignment_with_transpose_is_one},
    {"alignment orthogonal is zero", alignment_orthogonal_is_zero},
    {NULL, NULL},
};
