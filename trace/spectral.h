/* Spectral measures of one traced matrix, computed from its stored SVD.
 *
 * Dimension letters: m × n is the matrix (out, in), r = min(m, n) the number
 * of singular values, k the number of singular vectors kept. Layouts match the
 * trace files: singular values s [r] descending, left singular vectors u
 * [m, k] as columns (u[i·k + j] is component i of vector j), right singular
 * vectors vt [k, n] as rows.
 *
 * Conventions for degenerate spectra, so that no measure is NaN: a zero
 * matrix (Σs = 0) has every norm and every rank measure equal to 0, and zero
 * singular values of a rank-deficient matrix add nothing to the entropy
 * (0 · log 0 = 0). Negative inputs are treated as 0. A spectrum that
 * contains NaN or infinity gives NaN. */
#ifndef SD_SPECTRAL_H
#define SD_SPECTRAL_H

/* The largest k used for singular vector agreement and alignment. */
#define SPECTRAL_MAX_VECTORS 100

typedef struct {
    double frobenius;       /* sqrt(Σ s_i²) */
    double spectral;        /* s_1 */
    double nuclear;         /* Σ s_i */
    double effective_rank;  /* exp(entropy of s / Σs) / r, in (0, 1]; 0 for the zero matrix */
    double rank90;          /* smallest count of leading s_i whose sum is >= 0.9 Σs, / r */
    double stable_rank;     /* Σ s_i² / s_1², / r */
} SpectralMetrics;

/* Compute the norms and rank measures of a matrix from its r >= 1 singular
 * values s [r] (descending). */
SpectralMetrics spectral_metrics(const float *s, int r);

/* Effective rank alone: exp(entropy of s / Σs) / r, 0 for the zero matrix. */
double spectral_effective_rank(const float *s, int r);

/* Write the singular vector agreement matrix of snapshot t against a
 * reference snapshot, sva [k, k] with sva[a·k + b] = |⟨u_a(t), u_b(ref)⟩| ·
 * |⟨v_a(t), v_b(ref)⟩|, for the top k <= kv of the kv stored vectors
 * (u_t, u_ref [m, kv]; vt_t, vt_ref [kv, n]). */
void spectral_sva(const float *u_t, const float *vt_t, const float *u_ref, const float *vt_ref, int m, int n, int kv,
                  int k, float *sva);

/* Write only the diagonal of spectral_sva() into diag [k]; each entry is in
 * [0, 1] for unit vectors and costs O(m + n). */
void spectral_sva_diagonal(const float *u_t, const float *vt_t, const float *u_ref, const float *vt_ref, int m, int n,
                           int kv, int k, float *diag);

/* Write the alignment diagonal of consecutive layers from → to into diag [k]:
 * diag[i] = |⟨u_i(from), v_i(to)⟩|, the i-th diagonal entry of
 * |V_toᵀ U_from|. u_from [dim, k_from] contains the left singular vectors of
 * `from` (dim = its output size), vt_to [k_to, dim] the right singular
 * vectors of `to` (dim = its input size); k <= min(k_from, k_to). */
void spectral_alignment_diagonal(const float *u_from, int k_from, const float *vt_to, int k_to, int dim, int k,
                                 float *diag);

/* Return the pair score: the mean of diag [k], 0 when k = 0. */
double spectral_alignment_score(const float *diag, int k);

#endif
