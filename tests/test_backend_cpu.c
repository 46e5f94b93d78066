/* The CPU reference backend against direct double-precision evaluations of
 * the Hugging Face formulas (loops written out here, no BLAS), on random
 * inputs with GQA, several windows and odd sizes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "src/backend.h"

static uint64_t g_rng = 0x9e3779b97f4a7c15ull;
static float frand(void) /* uniform in [-1, 1) */
{
    g_rng ^= g_rng << 13, g_rng ^= g_rng >> 7, g_rng ^= g_rng << 17;
    return (float)((g_rng >> 40) * (1.0 / 8388608.0)) - 1.0f;
}
static float *rand_buf(size_t n, float scale)
{
    float *p = malloc(n * sizeof *p);
    for (size_t i = 0; i < n; i++)
        p[i] = frand() * scale;
    return p;
}
static double rel_err(const float *a, const double *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        double d = a[i] - ref[i];
        num += d * d, den += ref[i] * ref[i];
        if (isnan(a[i]))
            return INFINITY;
    }
    return sqrt(num / (den > 0 ? den : 1));
}

static void test_attention_gqa(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int batch = 3, seq = 17, nh = 6, nkv = 2, hd = 10, qd = nh * hd, kd = nkv * hd;
    float *q = rand_buf((size_t)batch * seq * qd, 2), *k = rand_buf((size_t)batch * seq * kd, 2);
    float *v = rand_buf((size_t)batch * seq * kd, 1), *out = malloc(sizeof(float) * batch * seq * qd);
    double *ref = calloc((size_t)batch * seq * qd, sizeof(double));
    assert_int_equal(b->attention(b, out, q, k, v, batch, seq, nh, nkv, hd), 0);
    for (int w = 0; w < batch; w++)
        for (int h = 0; h < nh; h++) {
            int kh = h / (nh / nkv);
            for (int t = 0; t < seq; t++) {
                double s[64], mx = -1e300, sum = 0;
                for (int u = 0; u <= t; u++) {
                    double dot = 0;
                    for (int i = 0; i < hd; i++)
                        dot += (double)q[((size_t)w * seq + t) * qd + h * hd + i] * k[((size_t)w * seq + u) * kd + kh * hd + i];
                    s[u] = dot / sqrt((double)hd);
                    mx = s[u] > mx ? s[u] : mx;
                }
                for (int u = 0; u <= t; u++)
                    sum += (s[u] = exp(s[u] - mx));
                for (int i = 0; i < hd; i++) {
                    double acc = 0;
                    for (int u = 0; u <= t; u++)
                        acc += s[u] / sum * v[((size_t)w * seq + u) * kd + kh * hd + i];
                    ref[((size_t)w * seq + t) * qd + h * hd + i] = acc;
                }
            }
        }
    assert_true(rel_err(out, ref, (size_t)batch * seq * qd) < 1e-6);
    free(q), free(k), free(v), free(out), free(ref);
    b->destroy(b);
}

static void test_norm_rope_linear_silu(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int rows = 7, dim = 12, out = 5;
    float *x = rand_buf((size_t)rows * dim, 3), *w = rand_buf(dim, 1), *y = malloc(sizeof(float) * rows * dim);
    double ref[7 * 12];
    assert_int_equal(b->rmsnorm(b, y, x, w, rows, dim, 1e-5f), 0);
    for (int r = 0; r < rows; r++) {
        double ss = 0;
        for (int i = 0; i < dim; i++)
            ss += (double)x[r * dim + i] * x[r * dim + i];
        for (int i = 0; i < dim; i++)
            ref[r * dim + i] = w[i] * x[r * dim + i] / sqrt(ss / dim + 1e-5);
    }
    assert_true(rel_err(y, ref, (size_t)rows * dim) < 1e-6);

    /* rope: two heads of dim 6, positions r % 3; rotate-half pairs (i, i+3). */
    const int seq = 3, hd = 6;
    float table[3 * 6];
    for (int p = 0; p < seq; p++)
        for (int i = 0; i < hd / 2; i++) {
            double f = pow(10000.0, -2.0 * i / hd);
            table[p * hd + i] = (float)cos(p * f), table[p * hd + hd / 2 + i] = (float)sin(p * f);
        }
    memcpy(y, x, sizeof(float) * rows * dim);
    assert_int_equal(b->rope(b, y, table, rows, seq, 2, hd), 0);
    for (int r = 0; r < rows; r++)
        for (int h = 0; h < 2; h++)
            for (int i = 0; i < 3; i++) {
                double a = (r % seq) * pow(10000.0, -2.0 * i / hd);
                const float *xv = x + r * dim + h * hd;
                ref[r * dim + h * hd + i] = xv[i] * cos(a) - xv[i + 3] * sin(a);
                ref[r * dim + h * hd + i + 3] = xv[i + 3] * cos(a) + xv[i] * sin(a);
            }
    assert_true(rel_err(y, ref, (size_t)rows * dim) < 1e-6);

    float *W = rand_buf((size_t)out * dim, 1), *bias = rand_buf(out, 1), *yl = malloc(sizeof(float) * rows * out);
    assert_int_equal(b->linear(b, yl, x, W, bias, rows, dim, out), 0);
    for (int r = 0; r < rows; r++)
        for (int j = 0; j < out; j++) {
            double acc = bias[j];
            for (int i = 0; i < dim; i++)
                acc += (double)x[r * dim + i] * W[j * dim + i];
            ref[r * out + j] = acc;
        }
    assert_true(rel_err(yl, ref, (size_t)rows * out) < 1e-6);

    assert_int_equal(b->silu_mul(b, y, x, w, dim), 0);
    for (int i = 0; i < dim; i++)
        ref[i] = x[i] / (1 + exp(-(double)x[i])) * w[i];
    assert_true(rel_err(y, ref, dim) < 1e-6);
    free(x), free(w), free(y), free(W), free(bias), free(yl);
    b->destroy(b);
}

static void test_nll_absmax_xtx_fq(void **state)
{
    (void)state;
    llmq_backend *b;
    assert_int_equal(llmq_backend_cpu(&b), 0);
    const int rows = 4, vocab = 9;
    float *logits = rand_buf(rows * vocab, 5);
    int32_t tg[4] = {3, -1, 8, 0};
    double nll = 0, ref = 0;
    assert_int_equal(b->nll(b, &nll, logits, tg, rows, vocab), 0);
    for (int r = 0; r < rows; r++) {
        if (tg[r] < 0)
            continue;
        double z = 0;
        for (int i = 0; i < vocab; i++)
            z += exp(logits[r * vocab + i]);
        ref += log(z) - logits[r * vocab + tg[r]];
    }
    assert_true(fabs(nll - ref) < 1e-5 * fabs(ref));

    float amax[9] = {0.5f, 0, 0, 0, 0, 0, 0, 0, 0}, h[81] = {0};
    assert_int_equal(b->col_absmax(b, amax, logits, rows, vocab), 0);
    assert_int_equal(b->xtx(b, h, logits, rows, vocab, 2.0f), 0);
    for (int j = 0; j < vocab; j++) {
        float m = j == 0 ? 0.5f : 0;
        for (int r = 0; r < rows; r++)
            m = fabsf(logits[r * vocab + j]) > m ? fabsf(logits[r * vocab + j]) : m;
        assert_true(amax[j] == m);
        for (int i = 0; i < vocab; i++) {
            double acc = 0;
            for (int r = 0; r < rows; r++)
                acc += 2.0 * logits[r * vocab + i] * logits[r * vocab + j];
            assert_true(fabs(h[i * vocab + j] - acc) < 1e-4 * (1 + fabs(acc)));
        }
    }
    /* Per-token int8 fake quant: abs-max 127 maps to +-127 steps exactly. */
    float t[4] = {1.27f, -0.635f, 0.004f, 0.0f};
    assert_int_equal(b->fq_per_token(b, t, 1, 4, 127), 0);
    assert_true(fabsf(t[0] - 1.27f) < 1e-6f && fabsf(t[1] + 0.64f) < 1e-6f && t[2] == 0.0f && t[3] == 0.0f);
    free(logits);
    b->destroy(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_attention_gqa),
        cmocka_unit_test(test_norm_rope_linear_silu),
        cmocka_unit_test(test_nll_absmax_xtx_fq),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
