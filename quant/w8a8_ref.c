#include "quant/w8a8_ref.h"

#include <math.h>
#include <stddef.h>

/* Store in dt and read back (identity for F32). */
static float rnd(float v, llmq_dtype dt)
{
    switch (dt) {
    case LLMQ_F16: return llmq_f16_to_f32(llmq_f32_to_f16(v));
    case LLMQ_BF16: return llmq_bf16_to_f32(llmq_f32_to_bf16(v));
    default: return v;
    }
}

static int8_t q8(float v, float s)
{
    float r = rintf(v / s);
    r = r < -127.0f ? -127.0f : r > 127.0f ? 127.0f : r;
    return (int8_t)r;
}

/* Quantize one row of n values with its own absmax scale. */
static void quant_row(const float *y, int n, int8_t *q, float *scale)
{
    float mx = 0.0f;
    for (int j = 0; j < n; j++)
        mx = fabsf(y[j]) > mx ? fabsf(y[j]) : mx;
    const float s = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
    for (int j = 0; j < n; j++)
        q[j] = q8(y[j], s);
    *scale = s;
}

void quant_per_token_ref(const float *x, int rows, int cols, int8_t *q, float *scale)
{
    for (int r = 0; r < rows; r++)
        quant_row(x + (size_t)r * cols, cols, q + (size_t)r * cols, scale + r);
}

void rmsnorm_quant_ref(llmq_dtype dt, float *x, const float *delta, const float *w, int rows, int dim, float eps,
                       int8_t *q, float *scale)
{
    for (int r = 0; r < rows; r++) {
        float *xr = x + (size_t)r * dim;
        int8_t *qr = q + (size_t)r * dim;
        if (delta) {
            const float *dr = delta + (size_t)r * dim;
            for (int i = 0; i < dim; i++)
                xr[i] = rnd(xr[i] + dr[i], dt);
        }
        double ss = 0.0;
        for (int i = 0; i < dim; i++)
            ss += (double)xr[i] * xr[i];
        const float inv = 1.0f / sqrtf((float)ss / (float)dim + eps);
        /* y is computed twice (for the absmax, then for the codes) rather
         * than kept in a buffer: the same arithmetic gives the same floats. */
        float mx = 0.0f;
        for (int i = 0; i < dim; i++) {
            float y = rnd(w[i] * rnd(xr[i] * inv, dt), dt);
            mx = fabsf(y) > mx ? fabsf(y) : mx;
        }
        const float s = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
        for (int i = 0; i < dim; i++)
            qr[i] = q8(rnd(w[i] * rnd(xr[i] * inv, dt), dt), s);
        scale[r] = s;
    }
}

static float silu_mul(float g, float u, llmq_dtype dt) { return rnd(rnd(g / (1.0f + expf(-g)), dt) * u, dt); }

void silu_mul_quant_ref(llmq_dtype dt, const float *gate, const float *up, int ld, int rows, int cols, int8_t *q,
                        float *scale)
{
    for (int r = 0; r < rows; r++) {
        const float *g = gate + (size_t)r * ld, *u = up + (size_t)r * ld;
        int8_t *qr = q + (size_t)r * cols;
        float mx = 0.0f;
        for (int j = 0; j < cols; j++) {
            float y = silu_mul(g[j], u[j], dt);
            mx = fabsf(y) > mx ? fabsf(y) : mx;
        }
        const float s = (mx < 1e-5f ? 1e-5f : mx) / 127.0f;
        for (int j = 0; j < cols; j++)
            qr[j] = q8(silu_mul(g[j], u[j], dt), s);
        scale[r] = s;
    }
}

void int8_gemm_ref(const int8_t *x, const float *s_tok, const int8_t *w, const float *s_ch, int M, int N, int K,
                   int32_t *acc, float *y, llmq_dtype dt)
{
    for (int m = 0; m < M; m++) {
        const int8_t *xr = x + (size_t)m * K;
        for (int n = 0; n < N; n++) {
            const int8_t *wr = w + (size_t)n * K;
            int32_t a = 0;
            for (int k = 0; k < K; k++)
                a += (int32_t)xr[k] * (int32_t)wr[k];
            if (acc)
                acc[(size_t)m * N + n] = a;
            if (y)
                y[(size_t)m * N + n] = rnd((float)a * s_tok[m] * s_ch[n], dt);
        }
    }
}

void w8_quantize_per_channel(const float *w, int N, int K, int8_t *q, float *scale)
{
    quant_per_token_ref(w, N, K, q, scale); /* the same grid, one row per output channel */
}
