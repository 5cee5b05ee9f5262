/* Spectral measures; see spectral.h. */
#include "spectral.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#include "error.h"

/* Return s[i] with negative values clamped to 0 so running sums never decrease; NaN passes through. */
static double singular_value(const float *s, int i) {
    double v = s[i];
    return v > 0.0 ? v : (v == v ? 0.0 : v);
}

double spectral_effective_rank(const float *s, int r) {
    CHECK(r >= 1, "rank %d", r);
    double total = 0.0;
    for (int i = 0; i < r; i++) total += singular_value(s, i);
    if (isnan(total) || isinf(total)) return NAN;
    if (total == 0.0) return 0.0;

    double entropy = 0.0;
    for (int i = 0; i < r; i++) {
        double p = singular_value(s, i) / total;
        if (p > 0.0) entropy -= p * log(p);
    }
    return exp(entropy) / r;
}

SpectralMetrics spectral_metrics(const float *s, int r) {
    CHECK(r >= 1, "rank %d", r);
    SpectralMetrics out = {0};
    double total = 0.0, squares = 0.0;
    for (int i = 0; i < r; i++) {
        double v = singular_value(s, i);
        total += v;
        squares += v * v;
    }
    out.frobenius = sqrt(squares);
    out.spectral = singular_value(s, 0);
    out.nuclear = total;
    if (isnan(total) || isinf(total)) {
        out.effective_rank = out.rank90 = out.stable_rank = NAN;
        return out;
    }
    if (total == 0.0) return out;

    out.effective_rank = spectral_effective_rank(s, r);

    /* Relative slack so that spectra like r equal values reach exactly 90 %
     * despite rounding in the running sum. */
    double target = 0.9 * total * (1.0 - 1e-12);
    double running = 0.0;
    int count = 0;
    while (count < r && running < target) running += singular_value(s, count++);
    out.rank90 = (double)count / r;

    out.stable_rank = squares / (out.spectral * out.spectral) / r;
    return out;
}

void spectral_sva(const float *u_t, const float *vt_t, const float *u_ref, const float *vt_ref, int m, int n, int kv,
                  int k, float *sva) {
    CHECK(k >= 0 && k <= kv, "k = %d with %d stored vectors", k, kv);
    if (k == 0) return;
    float *vv = sd_malloc((size_t)k * k * sizeof(float));
    /* U_tᵀ U_ref on the first k columns: both are [m, kv] with leading dimension kv. */
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, k, k, m, 1.0f, u_t, kv, u_ref, kv, 0.0f, sva, k);
    /* V_tᵀ V_ref = Vt_t Vt_refᵀ on the first k rows. */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, k, k, n, 1.0f, vt_t, n, vt_ref, n, 0.0f, vv, k);
    for (long i = 0; i < (long)k * k; i++) sva[i] = fabsf(sva[i]) * fabsf(vv[i]);
    free(vv);
}

void spectral_sva_diagonal(const float *u_t, const float *vt_t, const float *u_ref, const float *vt_ref, int m, int n,
                           int kv, int k, float *diag) {
    CHECK(k >= 0 && k <= kv, "k = %d with %d stored vectors", k, kv);
    for (int a = 0; a < k; a++) {
        double du = 0.0, dv = 0.0;
        for (int i = 0; i < m; i++) du += (double)u_t[(long)i * kv + a] * (double)u_ref[(long)i * kv + a];
        for (int j = 0; j < n; j++) dv += (double)vt_t[(long)a * n + j] * (double)vt_ref[(long)a * n + j];
        diag[a] = (float)(fabs(du) * fabs(dv));
    }
}

void spectral_alignment_diagonal(const float *u_from, int k_from, const float *vt_to, int k_to, int dim, int k,
                                 float *diag) {
    CHECK(k >= 0 && k <= k_from && k <= k_to, "k = %d with %d and %d stored vectors", k, k_from, k_to);
    for (int i = 0; i < k; i++) {
        double dot = 0.0;
        for (int j = 0; j < dim; j++) dot += (double)u_from[(long)j * k_from + i] * (double)vt_to[(long)i * dim + j];
        diag[i] = (float)fabs(dot);
    }
}

double spectral_alignment_score(const float *diag, int k) {
    if (k <= 0) return 0.0;
    double sum = 0.0;
    for (int i = 0; i < k; i++) sum += (double)diag[i];
    return sum / k;
}
