#include "quant/pack.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "src/dtype.h"
#include "src/error.h"

/* ---- generic bit streams ---- */

void pack_bits(const uint8_t *vals, size_t n, int bits, uint32_t *words, size_t stride)
{
    const size_t nwords = (n * (size_t)bits + 31) / 32;
    const uint32_t mask = (1u << bits) - 1;
    for (size_t w = 0; w < nwords; w++)
        words[w * stride] = 0;
    for (size_t i = 0; i < n; i++) {
        size_t off = i * (size_t)bits, w = off / 32;
        unsigned sh = (unsigned)(off % 32);
        uint32_t v = vals[i] & mask;
        words[w * stride] |= v << sh;
        if (sh + (unsigned)bits > 32) /* straddles: the high part opens the next word */
            words[(w + 1) * stride] |= v >> (32 - sh);
    }
}

void unpack_bits(const uint32_t *words, size_t stride, size_t n, int bits, uint8_t *vals)
{
    const uint32_t mask = (1u << bits) - 1;
    for (size_t i = 0; i < n; i++) {
        size_t off = i * (size_t)bits, w = off / 32;
        unsigned sh = (unsigned)(off % 32);
        uint32_t v = words[w * stride] >> sh;
        if (sh + (unsigned)bits > 32)
            v |= words[(w + 1) * stride] << (32 - sh);
        vals[i] = (uint8_t)(v & mask);
    }
}

/* int32 tensors on disk, uint32 for shifting: same bits. */
static uint32_t *as_u32(int32_t *p) { return (uint32_t *)(void *)p; }
static const uint32_t *as_cu32(const int32_t *p) { return (const uint32_t *)(const void *)p; }

/* A zero point as an integer code, or -1 if it is not one. */
static int zero_code(float z, int maxq)
{
    if (!(z >= 0.0f && z <= (float)maxq) || z != floorf(z))
        return -1;
    return (int)z;
}

/* ---- GPTQ ---- */

int gptq_fits(int K, int N, int bits, const char **why)
{
    const char *w = NULL;
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        w = "GPTQ packing supports 2, 3, 4 and 8 bits";
    else if (K <= 0 || N <= 0)
        w = "empty shape";
    else if ((long)K * bits % 32 != 0)
        w = bits == 3 ? "in_features must be a multiple of 32 at 3 bits (qweight packs along K)"
                      : "in_features * bits must be a multiple of 32 (qweight packs along K)";
    else if ((long)N * bits % 32 != 0)
        w = bits == 3 ? "out_features must be a multiple of 32 at 3 bits (qzeros packs along N)"
                      : "out_features * bits must be a multiple of 32 (qzeros packs along N)";
    if (why)
        *why = w ? w : "";
    return w == NULL;
}

size_t gptq_qweight_rows(int K, int bits) { return (size_t)K * (size_t)bits / 32; }
size_t gptq_qzeros_cols(int N, int bits) { return (size_t)N * (size_t)bits / 32; }

/* qweight packs along K only, qzeros along N only: each checks its own
 * dimension (gptq_fits checks both for a whole checkpoint). */
static int check_dim(const char *what, const char *dim, int len, int bits)
{
    if (bits != 2 && bits != 3 && bits != 4 && bits != 8)
        return llmq_fail("%s: %d bits not supported (2, 3, 4, 8)", what, bits);
    if (len <= 0 || (long)len * bits % 32 != 0)
        return llmq_fail("%s: %s %d * %d bits is not a multiple of 32", what, dim, len, bits);
    return 0;
}

int gptq_pack_qweight(const llmq_qweight *qw, int32_t *qweight)
{
    const int K = qw->in, N = qw->out;
    if (check_dim("GPTQ qweight", "in_features", K, qw->bits) < 0)
        return -1;
    for (int n = 0; n < N; n++)
        pack_bits(qw->q + (size_t)n * K, (size_t)K, qw->bits, as_u32(qweight) + n, (size_t)N);
    return 0;
}

int gptq_unpack_qweight(const int32_t *qweight, int K, int N, int bits, uint8_t *q)
{
    if (check_dim("GPTQ qweight", "in_features", K, bits) < 0)
        return -1;
    if (N <= 0)
        return llmq_fail("GPTQ qweight: bad out_features %d", N);
    for (int n = 0; n < N; n++)
        unpack_bits(as_cu32(qweight) + n, (size_t)N, (size_t)K, bits, q + (size_t)n * K);
    return 0;
}

int gptq_pack_qzeros(const llmq_qweight *qw, int v2, int32_t *qzeros)
{
    const int N = qw->out, maxq = (1 << qw->bits) - 1;
    if (check_dim("GPTQ qzeros", "out_features", N, qw->bits) < 0)
        return -1;
    uint8_t *row = malloc((size_t)N);
    if (!row)
        return llmq_fail("GPTQ qzeros: out of memory");
    const size_t cols = gptq_qzeros_cols(N, qw->bits);
    for (int g = 0; g < qw->ngroups; g++) {
        for (int n = 0; n < N; n++) {
            int z = zero_code(qw->zeros[(size_t)g * N + n], maxq);
            if (z < 0 || (!v2 && z == 0)) {
                free(row);
                if (z < 0)
                    return llmq_fail("GPTQ qzeros: zero point %g (group %d, row %d) is not an integer in 0..%d",
                                     (double)qw->zeros[(size_t)g * N + n], g, n, maxq);
                return llmq_fail("GPTQ v1 qzeros: zero point 0 (group %d, row %d) cannot be stored as zero-1; "
                                 "write checkpoint_format gptq_v2",
                                 g, n);
            }
            row[n] = (uint8_t)(v2 ? z : z - 1);
        }
        pack_bits(row, (size_t)N, qw->bits, as_u32(qzeros) + (size_t)g * cols, 1);
    }
    free(row);
    return 0;
}

int gptq_unpack_qzeros(const int32_t *qzeros, int ngroups, int N, int bits, int v2, float *zeros)
{
    if (check_dim("GPTQ qzeros", "out_features", N, bits) < 0)
        return -1;
    uint8_t *row = malloc((size_t)N);
    if (!row)
        return llmq_fail("GPTQ qzeros: out of memory");
    const size_t cols = gptq_qzeros_cols(N, bits);
    for (int g = 0; g < ngroups; g++) {
        unpack_bits(as_cu32(qzeros) + (size_t)g * cols, 1, (size_t)N, bits, row);
        for (int n = 0; n < N; n++)
            zeros[(size_t)g * N + n] = (float)row[n] + (v2 ? 0.0f : 1.0f);
    }
    free(row);
    return 0;
}

void gptq_pack_scales(const llmq_qweight *qw, uint16_t *scales)
{
    const size_t n = (size_t)qw->ngroups * (size_t)qw->out;
    for (size_t i = 0; i < n; i++)
        scales[i] = llmq_f32_to_f16(qw->scales[i]);
}

int gptq_import(const int32_t *qweight, const int32_t *qzeros, const uint16_t *scales, const int32_t *g_idx,
                int K, int N, int bits, int group, int ngroups, int v2, int sym, llmq_qweight *res)
{
    const char *why;
    if (!gptq_fits(K, N, bits, &why))
        return llmq_fail("GPTQ import [%d, %d] at %d bits: %s", N, K, bits, why);
    if (qweight_alloc(res, N, K, bits, group, sym) < 0)
        return llmq_wrap("GPTQ import");
    if (ngroups != res->ngroups) {
        int want = res->ngroups;
        qweight_free(res);
        return llmq_fail("GPTQ import: %d groups for in_features %d and group size %d, expected %d", ngroups, K,
                         group, want);
    }
    for (int k = 0; k < K; k++) {
        if (g_idx[k] < 0 || g_idx[k] >= ngroups) {
            int bad = g_idx[k];
            qweight_free(res);
            return llmq_fail("GPTQ import: g_idx[%d] = %d outside 0..%d", k, bad, ngroups - 1);
        }
        res->g_idx[k] = g_idx[k];
    }
    gptq_unpack_qweight(qweight, K, N, bits, res->q);
    gptq_unpack_qzeros(qzeros, ngroups, N, bits, v2, res->zeros);
    /* v1 fields read back as field + 1: a writer that stored zero 0 as the
     * masked field maxq gets 2^bits back, which still dequantizes as meant,
     * so it is kept (not clamped). */
    for (size_t i = 0; i < (size_t)ngroups * (size_t)N; i++)
        res->scales[i] = llmq_f16_to_f32(scales[i]);
    return 0;
}

/* ---- AWQ GEMM ---- */

/* Nibble j of a word holds element awq_order[j] of its 8. */
static const int awq_order[8] = {0, 2, 4, 6, 1, 3, 5, 7};

int awq_fits(int K, int N, int bits, const char **why)
{
    const char *w = NULL;
    if (bits != 4)
        w = "AWQ GEMM packing is 4-bit only";
    else if (K <= 0 || N <= 0)
        w = "empty shape";
    else if (N % 8 != 0)
        w = "out_features must be a multiple of 8 (qweight packs 8 outputs per int32)";
    if (why)
        *why = w ? w : "";
    return w == NULL;
}

static int awq_check(const char *what, const llmq_qweight *qw)
{
    const char *why;
    if (!awq_fits(qw->in, qw->out, qw->bits, &why))
        return llmq_fail("%s [%d, %d]: %s", what, qw->out, qw->in, why);
    const int G = qw->group > 0 ? qw->group : qw->in;
    for (int k = 0; k < qw->in; k++)
        if (qw->g_idx[k] != k / G)
            return llmq_fail("%s: act-order g_idx cannot be stored in the AWQ layout", what);
    return 0;
}

static uint32_t awq_word(const uint8_t *v8)
{
    uint32_t w = 0;
    for (int j = 0; j < 8; j++)
        w |= (uint32_t)(v8[awq_order[j]] & 0xF) << (4 * j);
    return w;
}

static void awq_unword(uint32_t w, uint8_t *v8)
{
    for (int j = 0; j < 8; j++)
        v8[awq_order[j]] = (uint8_t)((w >> (4 * j)) & 0xF);
}

int awq_pack_qweight(const llmq_qweight *qw, int32_t *qweight)
{
    if (awq_check("AWQ qweight", qw) < 0)
        return -1;
    const int K = qw->in, N = qw->out, W = N / 8;
    uint8_t v8[8];
    for (int k = 0; k < K; k++)
        for (int w = 0; w < W; w++) {
            for (int j = 0; j < 8; j++)
                v8[j] = qw->q[(size_t)(8 * w + j) * K + k];
            as_u32(qweight)[(size_t)k * W + w] = awq_word(v8);
        }
    return 0;
}

int awq_unpack_qweight(const int32_t *qweight, int K, int N, uint8_t *q)
{
    const char *why;
    if (!awq_fits(K, N, 4, &why))
        return llmq_fail("AWQ qweight [%d, %d]: %s", N, K, why);
    const int W = N / 8;
    uint8_t v8[8];
    for (int k = 0; k < K; k++)
        for (int w = 0; w < W; w++) {
            awq_unword(as_cu32(qweight)[(size_t)k * W + w], v8);
            for (int j = 0; j < 8; j++)
                q[(size_t)(8 * w + j) * K + k] = v8[j];
        }
    return 0;
}

int awq_pack_qzeros(const llmq_qweight *qw, int32_t *qzeros)
{
    if (awq_check("AWQ qzeros", qw) < 0)
        return -1;
    const int N = qw->out, W = N / 8;
    uint8_t v8[8];
    for (int g = 0; g < qw->ngroups; g++)
        for (int w = 0; w < W; w++) {
            for (int j = 0; j < 8; j++) {
                int z = zero_code(qw->zeros[(size_t)g * N + 8 * w + j], 15);
                if (z < 0)
                    return llmq_fail("AWQ qzeros: zero point %g (group %d) is not an integer in 0..15",
                                     (double)qw->zeros[(size_t)g * N + 8 * w + j], g);
                v8[j] = (uint8_t)z;
            }
            as_u32(qzeros)[(size_t)g * W + w] = awq_word(v8);
        }
    return 0;
}

int awq_unpack_qzeros(const int32_t *qzeros, int ngroups, int N, float *zeros)
{
    const char *why;
    if (!awq_fits(32, N, 4, &why))
        return llmq_fail("AWQ qzeros: %s", why);
    const int W = N / 8;
    uint8_t v8[8];
    for (int g = 0; g < ngroups; g++)
        for (int w = 0; w < W; w++) {
            awq_unword(as_cu32(qzeros)[(size_t)g * W + w], v8);
            for (int j = 0; j < 8; j++)
                zeros[(size_t)g * N + 8 * w + j] = (float)v8[j];
        }
    return 0;
}

/* ---- llmq's own layout ---- */

size_t llmqfmt_row_bytes(int K, int bits) { return bits <= 4 ? ((size_t)K + 1) / 2 : (size_t)K; }

void llmqfmt_pack_codes(const llmq_qweight *qw, uint8_t *out)
{
    const size_t K = (size_t)qw->in, rb = llmqfmt_row_bytes(qw->in, qw->bits);
    for (size_t n = 0; n < (size_t)qw->out; n++) {
        const uint8_t *q = qw->q + n * K;
        uint8_t *o = out + n * rb;
        if (qw->bits > 4) {
            memcpy(o, q, K);
            continue;
        }
        /* even k low nibble, odd k high nibble: byte = q[2i] | q[2i+1] << 4 */
        for (size_t i = 0; i < rb; i++) {
            uint8_t lo = q[2 * i] & 0xF, hi = 2 * i + 1 < K ? q[2 * i + 1] & 0xF : 0;
            o[i] = (uint8_t)(lo | hi << 4);
        }
    }
}

int llmqfmt_unpack_codes(const uint8_t *in, int N, int K, int bits, uint8_t *q)
{
    if (bits < 2 || bits > 8)
        return llmq_fail("llmq codes: %d bits not supported", bits);
    const size_t rb = llmqfmt_row_bytes(K, bits);
    const int maxq = (1 << bits) - 1;
    for (size_t n = 0; n < (size_t)N; n++) {
        const uint8_t *r = in + n * rb;
        uint8_t *o = q + n * (size_t)K;
        for (size_t k = 0; k < (size_t)K; k++) {
            uint8_t v = bits > 4 ? r[k] : (k % 2 == 0 ? r[k / 2] & 0xF : r[k / 2] >> 4);
            if (v > maxq)
                return llmq_fail("llmq codes: code %u at [%zu, %zu] exceeds %d-bit range", v, n, k, bits);
            o[k] = v;
        }
    }
    return 0;
}

void llmqfmt_pack_params(const llmq_qweight *qw, uint16_t *scales, uint16_t *zeros)
{
    const size_t N = (size_t)qw->out, G = (size_t)qw->ngroups;
    for (size_t n = 0; n < N; n++)
        for (size_t g = 0; g < G; g++) {
            scales[n * G + g] = llmq_f32_to_f16(qw->scales[g * N + n]);
            zeros[n * G + g] = llmq_f32_to_f16(qw->zeros[g * N + n]);
        }
}

void llmqfmt_unpack_params(const uint16_t *scales, const uint16_t *zeros, int N, int ngroups, float *scales_out,
                           float *zeros_out)
{
    const size_t n_ = (size_t)N, G = (size_t)ngroups;
    for (size_t n = 0; n < n_; n++)
        for (size_t g = 0; g < G; g++) {
            scales_out[g * n_ + n] = llmq_f16_to_f32(scales[n * G + g]);
            zeros_out[g * n_ + n] = llmq_f16_to_f32(zeros[n * G + g]);
        }
}
