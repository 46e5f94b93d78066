/* --alpha auto: score each alpha of the grid by the output error of the
 * W8A8-quantized group on held-out calibration inputs.
 *
 * The error is measured against the float outputs X W^T, which smoothing
 * does not change, so every alpha is judged on the same target. The
 * quantizers are those of SmoothQuant's fake_quant.py (per-token dynamic
 * activations, per-output-channel weights, symmetric int8, abs-max / 127),
 * i.e. what llmq-eval's W8A8 mode and the published numbers use. */
#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "smooth.h"

double smooth_grid_alpha(int k) { return k / 20.0; }

void smooth_q8_rows(float *x, int rows, int cols)
{
    for (int r = 0; r < rows; r++) {
        float *row = x + (size_t)r * cols, amax = 0.0f;
        for (int j = 0; j < cols; j++)
            amax = fmaxf(amax, fabsf(row[j]));
        float scale = (amax > 1e-5f ? amax : 1e-5f) / 127.0f;
        /* x / scale then round, as torch does (not x * (1 / scale));
         * rintf rounds half to even in the default rounding mode, like
         * torch.round. */
        for (int j = 0; j < cols; j++)
            row[j] = rintf(row[j] / scale) * scale;
    }
}

/* y = a b^T for row-major a [m, k], b [n, k]. */
static void gemm_nt(const float *a, const float *b, float *y, int m, int n, int k)
{
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, n, k, 1.0f, a, k, b, k, 0.0f, y, n);
}

double smooth_w8a8_error(const float *x, int T, int in, const float *w, int out, const float *s, const float *y_ref,
                         llmq_dtype dt)
{
    size_t nx = (size_t)T * in, nw = (size_t)out * in, ny = (size_t)T * out;
    float *xq = malloc(nx * sizeof *xq), *wq = malloc(nw * sizeof *wq), *y = malloc(ny * sizeof *y);
    float *yr = y_ref ? NULL : malloc(ny * sizeof *yr);
    double err = -1.0;
    if (!xq || !wq || !y || (!y_ref && !yr))
        goto done;
    if (!y_ref) {
        gemm_nt(x, w, yr, T, out, in);
        y_ref = yr;
    }
    for (size_t i = 0; i < nx; i++)
        xq[i] = x[i] / s[i % (size_t)in];
    for (size_t i = 0; i < nw; i++)
        wq[i] = w[i] * s[i % (size_t)in];
    /* The smoothed weights are stored in dt before anything quantizes them. */
    llmq_round_through(wq, nw, dt);
    smooth_q8_rows(xq, T, in);
    smooth_q8_rows(wq, out, in);
    gemm_nt(xq, wq, y, T, out, in);
    err = 0.0;
    for (size_t i = 0; i < ny; i++) {
        double d = (double)y_ref[i] - (double)y[i];
        err += d * d;
    }
done:
    free(xq);
    free(wq);
    free(y);
    free(yr);
    return err;
}

int smooth_auto_alpha(const float *x, int T, int in, const float *w, int out, const float *act, const float *wmax,
                      llmq_dtype dt, double *alpha, double *errs)
{
    size_t ny = (size_t)T * out;
    float *y = malloc(ny * sizeof *y), *s = malloc((size_t)in * sizeof *s);
    int rc = 0, best = -1;
    double best_err = 0.0;
    if (!y || !s) {
        rc = llmq_fail("smooth: out of memory scoring alphas (%d held-out tokens x %d outputs)", T, out);
        goto done;
    }
    gemm_nt(x, w, y, T, out, in); /* the float target, the same for every alpha */
    for (int k = 0; k < SMOOTH_NGRID; k++) {
        double a = smooth_grid_alpha(k);
        smooth_factors(act, wmax, in, a, s);
        double e = smooth_w8a8_error(x, T, in, w, out, s, y, dt);
        if (e < 0) {
            rc = llmq_fail("smooth: out of memory scoring alphas (%d held-out tokens x %d outputs)", T, out);
            goto done;
        }
        if (errs)
            errs[k] = e;
        /* Strictly less: on a tie the smaller alpha stays. A NaN error
         * (inf inputs) never wins. */
        if (best < 0 ? !isnan(e) : e < best_err) {
            best = k;
            best_err = e;
        }
    }
    if (best < 0)
        rc = llmq_fail("smooth: every alpha gives a non-finite error (held-out inputs not finite?)");
    else
        *alpha = smooth_grid_alpha(best);
done:
    free(y);
    free(s);
    return rc;
}
