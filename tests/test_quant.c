/* RTN, NF4 and the bit-packing layouts, against hand-computed values and
 * mathematical bounds (not against a second copy of the implementation). */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "quant/dynmap.h"
#include "quant/nf4.h"
#include "quant/pack.h"
#include "quant/qweight.h"
#include "quant/rtn.h"
#include "src/dtype.h"
#include "src/error.h"

static uint64_t rng = 0x2545F4914F6CDD1DULL;
static double urand(void)
{
    rng ^= rng << 13;
    rng ^= rng >> 7;
    rng ^= rng << 17;
    return ((double)(rng >> 11) + 0.5) / 9007199254740992.0;
}
static float grand(void) { return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand())); }

/* ---------------- RTN ---------------- */

static void test_round_half_even(void **state)
{
    (void)state;
    assert_true(rtn_round(0.5f) == 0.0f);
    assert_true(rtn_round(1.5f) == 2.0f);
    assert_true(rtn_round(2.5f) == 2.0f);
    assert_true(rtn_round(-1.5f) == -2.0f);
    assert_true(rtn_round(-2.5f) == -2.0f);
    assert_true(rtn_round(0.49999997f) == 0.0f);
    assert_true(rtn_round(2.5000002f) == 3.0f);
    assert_true(rtn_round(-0.5f) == 0.0f && signbit(rtn_round(-0.5f))); /* torch.round(-0.5) = -0. */
    assert_true(rtn_round(8388609.0f) == 8388609.0f);                  /* 2^23 + 1: already integral */
    assert_true(rtn_round(1e30f) == 1e30f);
    assert_true(isnan(rtn_round(NAN)));
}

/* Scale 1 (absmax 7.5 at 4-bit sym): x/scale is exact, so codes are the
 * textbook round-half-even + 8, clamped to 0..15. */
static void test_rtn_sym4_hand(void **state)
{
    (void)state;
    const float W[8] = {-7.5f, 0.5f, 1.5f, 2.5f, -2.5f, 3.49f, 7.5f, -0.5f};
    const uint8_t want[8] = {0, 8, 10, 10, 6, 11, 15, 8};
    const float deq[8] = {-8, 0, 2, 2, -2, 3, 7, 0};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(W, 1, 8, 4, -1, 1, 0, &q), 0);
    assert_int_equal(q.ngroups, 1);
    assert_true(q.scales[0] == 1.0f); /* 2 * 7.5 / 15 */
    assert_true(q.zeros[0] == 8.0f);
    assert_memory_equal(q.q, want, 8);
    float out[8];
    qweight_dequant(&q, out);
    for (int i = 0; i < 8; i++)
        assert_true(out[i] == deq[i]);
    qweight_free(&q);
}

static void test_rtn_sym_scale_rule(void **state)
{
    (void)state;
    /* absmax 3 on the positive side: scale 2*3/15 = 0.4, zero 8 */
    const float a[3] = {3.0f, -1.0f, 0.5f};
    float s, z;
    rtn_find_params(a, 3, 15, 1, 0, &s, &z);
    assert_true(s == 6.0f / 15.0f);
    assert_true(z == 8.0f);
    /* 3-bit sym: zero 4, scale 2*absmax/7 */
    rtn_find_params(a, 3, 7, 1, 0, &s, &z);
    assert_true(s == 6.0f / 7.0f);
    assert_true(z == 4.0f);
    /* no negative value: the reference keeps xmin = 0, so scale = max/15
     * with zero 8, and values above 7 steps clamp at 15 */
    const float b[3] = {1.0f, 2.0f, 3.0f};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(b, 1, 3, 4, -1, 1, 0, &q), 0);
    assert_true(q.scales[0] == 3.0f / 15.0f);
    assert_int_equal(q.q[0], 13); /* 1 / 0.2 = 5 -> 13 */
    assert_int_equal(q.q[1], 15); /* 10 + 8 clamped */
    assert_int_equal(q.q[2], 15);
    qweight_free(&q);
}

static void test_rtn_asym_hand(void **state)
{
    (void)state;
    /* 2-bit asym: min -1, max 4.5 -> scale 5.5/3, zero round(1/scale) = 1 */
    const float W[4] = {-1.0f, 0.0f, 2.0f, 4.5f};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(W, 1, 4, 2, -1, 0, 0, &q), 0);
    assert_true(q.scales[0] == 5.5f / 3.0f);
    assert_true(q.zeros[0] == 1.0f);
    const uint8_t want[4] = {0, 1, 2, 3}; /* -0.55->-1, 0, 1.09->1, 2.45->2; +1 */
    assert_memory_equal(q.q, want, 4);
    qweight_free(&q);
}

static void test_rtn_zero_rows(void **state)
{
    (void)state;
    float W[2 * 6] = {0};
    llmq_qweight q;
    /* sym: the [-1, 1] fallback, scale 2/15, zero 8, all codes 8 */
    assert_int_equal(rtn_quantize(W, 2, 6, 4, 3, 1, 0, &q), 0);
    for (int i = 0; i < q.ngroups * 2; i++) {
        assert_true(q.scales[i] == 2.0f / 15.0f);
        assert_true(q.zeros[i] == 8.0f);
    }
    for (int i = 0; i < 12; i++)
        assert_int_equal(q.q[i], 8);
    float out[12];
    qweight_dequant(&q, out);
    for (int i = 0; i < 12; i++)
        assert_true(out[i] == 0.0f);
    qweight_free(&q);
    /* asym: zero = round(1 / scale) with scale = fp32(2/15) = 0.13333334,
     * slightly above 2/15, so 1/scale = 7.4999996 and the zero is 7 (as in
     * the fp32 reference), the codes 7, and 0 still dequantizes to 0 */
    assert_int_equal(rtn_quantize(W, 2, 6, 4, -1, 0, 0, &q), 0);
    assert_true(q.zeros[0] == 7.0f && q.zeros[1] == 7.0f);
    assert_int_equal(q.q[0], 7);
    qweight_dequant(&q, out);
    assert_true(out[0] == 0.0f);
    qweight_free(&q);
}

static void test_rtn_partial_group(void **state)
{
    (void)state;
    /* K = 10, G = 4: groups {0-3}, {4-7}, {8-9} */
    const float W[10] = {1, -1, 0.5f, 0.25f, 3, 2, -1, 0, -7.5f, 1};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(W, 1, 10, 4, 4, 1, 0, &q), 0);
    assert_int_equal(q.ngroups, 3);
    const int32_t gi[10] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2};
    assert_memory_equal(q.g_idx, gi, sizeof gi);
    assert_true(q.scales[0] == 2.0f / 15.0f);
    assert_true(q.scales[1] == 6.0f / 15.0f);
    assert_true(q.scales[2] == 1.0f); /* only -7.5 and 1 */
    assert_int_equal(q.q[8], 0);      /* -7.5 -> -8 -> 0 */
    assert_int_equal(q.q[9], 9);
    qweight_free(&q);
    /* group >= K and group -1 are one group */
    assert_int_equal(qweight_ngroups(10, 16), 1);
    assert_int_equal(qweight_ngroups(10, -1), 1);
    assert_int_equal(qweight_ngroups(172, 32), 6);
    assert_int_equal(qweight_ngroups(10, 0), -1);
}

static void test_rtn_scale_f16(void **state)
{
    (void)state;
    /* absmax 1: scale 2/15 = 0.13333334 rounds to the half 0.13330078125 */
    const float W[2] = {1.0f, -0.4f};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(W, 1, 2, 4, -1, 1, 1, &q), 0);
    assert_true(q.scales[0] == 0.13330078125f);
    float out[2];
    qweight_dequant(&q, out);
    assert_true(out[0] == 7.0f * 0.13330078125f);
    qweight_free(&q);
    /* every scale of a random matrix is a half, and tiny ones stay > 0 */
    float R[16 * 64];
    for (int i = 0; i < 16 * 64; i++)
        R[i] = grand() * (i < 64 ? 1e-9f : 0.02f);
    assert_int_equal(rtn_quantize(R, 16, 64, 4, 16, 0, 1, &q), 0);
    for (int i = 0; i < q.ngroups * 16; i++) {
        assert_true(q.scales[i] > 0.0f);
        assert_true(llmq_f16_to_f32(llmq_f32_to_f16(q.scales[i])) == q.scales[i]);
    }
    qweight_free(&q);
}

/* |w - deq| <= scale / 2 for every weight, every bit width, sym and asym
 * (the grid always spans the group's range to within half a step). */
static void test_rtn_error_bound(void **state)
{
    (void)state;
    enum { N = 8, K = 100 };
    float W[N * K], D[N * K];
    for (int i = 0; i < N * K; i++)
        W[i] = grand() + (i % 7 == 0 ? 0.5f : 0.0f);
    /* every group holds a negative value: a sym group without one keeps
     * xmin = 0 (the reference's rule, tested above) and clamps its top half */
    for (int n = 0; n < N; n++)
        for (int k = 0; k < K; k += 32)
            W[n * K + k] = -0.1f - fabsf(W[n * K + k]);
    for (int bits = 2; bits <= 8; bits++)
        for (int sym = 0; sym <= 1; sym++) {
            llmq_qweight q;
            assert_int_equal(rtn_quantize(W, N, K, bits, 32, sym, 0, &q), 0);
            qweight_dequant(&q, D);
            for (int n = 0; n < N; n++)
                for (int k = 0; k < K; k++) {
                    float s = q.scales[q.g_idx[k] * N + n];
                    assert_true(q.q[n * K + k] <= (1 << bits) - 1);
                    assert_true(fabsf(W[n * K + k] - D[n * K + k]) <= 0.5f * s * 1.0001f);
                }
            qweight_free(&q);
        }
}

static void test_rtn_bad_args(void **state)
{
    (void)state;
    float W[4] = {0};
    llmq_qweight q;
    assert_int_equal(rtn_quantize(W, 1, 4, 1, -1, 1, 0, &q), -1);
    assert_int_equal(rtn_quantize(W, 1, 4, 9, -1, 1, 0, &q), -1);
    assert_int_equal(rtn_quantize(W, 1, 4, 4, 0, 1, 0, &q), -1);
    assert_int_equal(rtn_quantize(W, 0, 4, 4, -1, 1, 0, &q), -1);
    assert_non_null(strstr(llmq_last_error(), "shape"));
}

/* ---------------- NF4 ---------------- */

static void test_nf4_codebook(void **state)
{
    (void)state;
    /* FORMATS.md's 4-decimal table */
    const double table[16] = {-1,     -0.6962, -0.5251, -0.3949, -0.2844, -0.1848, -0.0911, 0,
                              0.0796, 0.1609,  0.2461,  0.3379,  0.4407,  0.5626,  0.7230,  1};
    for (int i = 0; i < 16; i++) {
        assert_true(fabs(nf4_code[i] - table[i]) < 6e-5);
        if (i)
            assert_true(nf4_code[i] > nf4_code[i - 1]);
    }
    assert_true(nf4_code[0] == -1.0f && nf4_code[7] == 0.0f && nf4_code[15] == 1.0f);
    /* each code value maps to itself; midpoints tie to the lower code */
    for (int i = 0; i < 16; i++)
        assert_int_equal(nf4_quantize_value(nf4_code[i]), i);
    /* nearest code on either side of each midpoint */
    for (int i = 0; i < 15; i++) {
        double mid = ((double)nf4_code[i] + nf4_code[i + 1]) / 2.0;
        assert_int_equal(nf4_quantize_value((float)(mid - 1e-6)), i);
        assert_int_equal(nf4_quantize_value((float)(mid + 1e-6)), i + 1);
    }
    /* bitsandbytes' CUDA thresholds are float literals; a value equal to one
     * goes to the lower code, the next float up to the upper one */
    assert_int_equal(nf4_quantize_value(-0.8480964004993439f), 0);
    assert_int_equal(nf4_quantize_value(nextafterf(-0.8480964004993439f, 1.0f)), 1);
    assert_int_equal(nf4_quantize_value(0.03979014977812767f), 7);
    assert_int_equal(nf4_quantize_value(nextafterf(0.03979014977812767f, 1.0f)), 8);
    assert_int_equal(nf4_quantize_value(0.5f), 12); /* 0.4407 is nearer than 0.5626 */
    assert_int_equal(nf4_quantize_value(0.04f), 8);
    assert_int_equal(nf4_quantize_value(0.0397f), 7);
}

static void test_nf4_pack_high_nibble(void **state)
{
    (void)state;
    const uint8_t codes[5] = {1, 2, 3, 0xF, 0xA};
    uint8_t packed[3], back[5];
    nf4_pack(codes, 5, packed);
    assert_int_equal(packed[0], 0x12);
    assert_int_equal(packed[1], 0x3F);
    assert_int_equal(packed[2], 0xA0);
    nf4_unpack(packed, 5, back);
    assert_memory_equal(back, codes, 5);
}

static void test_nf4_blocks_and_error(void **state)
{
    (void)state;
    enum { N = 64 * 2 + 2 }; /* two full blocks and a partial one */
    float x[N], y[N];
    for (int i = 0; i < N; i++)
        x[i] = 0.03f * grand();
    x[10] = -0.5f; /* block 0 absmax, negative */
    x[129] = 0.25f;
    llmq_nf4 q;
    assert_int_equal(nf4_quantize(x, N, 64, 0, &q), 0);
    assert_int_equal(q.nblocks, 3);
    assert_true(q.absmax[0] == 0.5f);
    assert_true(q.absmax[2] == fmaxf(fabsf(x[128]), 0.25f));
    assert_int_equal(nf4_dequantize(&q, y), 0);
    assert_true(y[10] == -0.5f); /* the extreme maps to -1 exactly */
    assert_int_equal(q.codes[10], 0);
    assert_true(y[129] == 0.25f);
    /* error <= half the widest gap between neighbouring codes, times absmax */
    float gap = 0.0f;
    for (int i = 0; i < 15; i++)
        gap = fmaxf(gap, nf4_code[i + 1] - nf4_code[i]);
    for (int i = 0; i < N; i++)
        assert_true(fabsf(x[i] - y[i]) <= 0.5f * gap * q.absmax[i / 64] * 1.0001f);
    nf4_free(&q);

    /* an all-zero block: absmax 0, code 7, exact zeros back */
    float z[70] = {0};
    z[69] = 1.0f;
    assert_int_equal(nf4_quantize(z, 70, 64, 0, &q), 0);
    assert_true(q.absmax[0] == 0.0f);
    assert_int_equal(q.codes[0], 7);
    assert_int_equal(nf4_dequantize(&q, z), 0);
    assert_true(z[0] == 0.0f && z[69] == 1.0f);
    nf4_free(&q);
}

static void test_dynmap(void **state)
{
    (void)state;
    float c[256];
    dynmap_signed(c);
    for (int i = 1; i < 256; i++)
        assert_true(c[i] > c[i - 1]);
    assert_true(c[127] == 0.0f);
    assert_true(c[255] == 1.0f);
    /* the largest magnitude below 1: mean of the last two of linspace(0.1, 1, 65) */
    assert_true(c[0] == -0.99296875f && c[254] == 0.99296875f);
    /* the smallest: 1e-6 * (0.1 + 1) / 2 */
    assert_true(fabsf(c[128] - 5.5e-7f) < 1e-12f && c[126] == -c[128]);
    assert_int_equal(dynmap_quantize_value(c, 0.0f), 127);
    assert_int_equal(dynmap_quantize_value(c, -1.0f), 0);
    assert_int_equal(dynmap_quantize_value(c, 1.0f), 255);
    assert_int_equal(dynmap_quantize_value(c, 0.999f), 255);
    assert_int_equal(dynmap_quantize_value(c, 0.995f), 254); /* 0.99297 is nearer than 1 */
    for (int i = 0; i < 256; i++)
        assert_int_equal(dynmap_quantize_value(c, c[i]), i);
    /* between two neighbours: the nearer one */
    for (int i = 0; i < 255; i++) {
        double mid = ((double)c[i] + c[i + 1]) / 2.0, gap = (double)c[i + 1] - c[i];
        assert_int_equal(dynmap_quantize_value(c, (float)(mid - 0.01 * gap)), i);
        assert_int_equal(dynmap_quantize_value(c, (float)(mid + 0.01 * gap)), i + 1);
    }
}

static void test_nf4_double_quant(void **state)
{
    (void)state;
    enum { N = 64 * 300 }; /* 300 absmax values: two blocks of 256 */
    float *x = malloc(N * sizeof(float)), *y1 = malloc(N * sizeof(float)), *y2 = malloc(N * sizeof(float));
    assert_non_null(x);
    for (int i = 0; i < N; i++)
        x[i] = 0.02f * grand() * (1.0f + (float)(i / 64 % 5));
    llmq_nf4 s, d;
    assert_int_equal(nf4_quantize(x, N, 64, 0, &s), 0);
    assert_int_equal(nf4_quantize(x, N, 64, 1, &d), 0);
    assert_int_equal(d.nblocks2, 2);
    assert_null(d.absmax);
    double mean = 0;
    for (size_t b = 0; b < s.nblocks; b++)
        mean += s.absmax[b];
    mean /= (double)s.nblocks;
    assert_true(fabs(d.offset - mean) < 1e-6 * mean);
    /* decoded absmax within half the widest step of the 8-bit map (near 1:
     * 0.9/64 / 2 = 0.0071) times the block's absmax2 */
    float *am = malloc(s.nblocks * sizeof(float));
    nf4_block_absmax(&d, am);
    for (size_t b = 0; b < s.nblocks; b++)
        assert_true(fabsf(am[b] - s.absmax[b]) <= 0.0075f * d.absmax2[b / 256]);
    assert_int_equal(nf4_dequantize(&s, y1), 0);
    assert_int_equal(nf4_dequantize(&d, y2), 0);
    double e1 = 0, e2 = 0;
    for (int i = 0; i < N; i++) {
        e1 += (double)(x[i] - y1[i]) * (x[i] - y1[i]);
        e2 += (double)(x[i] - y2[i]) * (x[i] - y2[i]);
    }
    assert_true(e2 <= e1 * 1.02);
    nf4_free(&s);
    nf4_free(&d);
    free(am);
    free(x), free(y1), free(y2);
}

/* ---------------- packing ---------------- */

static void test_bits_roundtrip(void **state)
{
    (void)state;
    const int bits_list[] = {2, 3, 4, 8};
    uint8_t v[200], back[200];
    uint32_t words[64];
    for (size_t b = 0; b < 4; b++) {
        int bits = bits_list[b];
        for (size_t n = 1; n <= 200; n += 13) {
            for (size_t i = 0; i < n; i++)
                v[i] = (uint8_t)(urand() * (1 << bits));
            pack_bits(v, n, bits, words, 1);
            unpack_bits(words, 1, n, bits, back);
            assert_memory_equal(back, v, n);
        }
    }
}

/* AutoGPTQ's 3-bit loop, written out: 32 values in 3 words. */
static void test_gptq_3bit_layout(void **state)
{
    (void)state;
    uint8_t v[32];
    for (int i = 0; i < 32; i++)
        v[i] = (uint8_t)((i * 5 + 3) % 8);
    uint32_t w[3] = {0, 0, 0};
    for (int j = 0; j < 10; j++)
        w[0] |= (uint32_t)v[j] << (3 * j);
    w[0] |= (uint32_t)v[10] << 30;
    w[1] |= ((uint32_t)v[10] >> 2) & 1;
    for (int j = 0; j < 10; j++)
        w[1] |= (uint32_t)v[11 + j] << (3 * j + 1);
    w[1] |= (uint32_t)v[21] << 31;
    w[2] |= ((uint32_t)v[21] >> 1) & 3;
    for (int j = 0; j < 10; j++)
        w[2] |= (uint32_t)v[22 + j] << (3 * j + 2);

    /* through the GPTQ qweight packer: K = 32, N = 1 */
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 1, 32, 3, -1, 1), 0);
    memcpy(q.q, v, 32);
    int32_t qw[3];
    assert_int_equal(gptq_pack_qweight(&q, qw), 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal((uint32_t)qw[i], w[i]);
    uint8_t back[32];
    assert_int_equal(gptq_unpack_qweight(qw, 32, 1, 3, back), 0);
    assert_memory_equal(back, v, 32);
    qweight_free(&q);
}

static void test_gptq_4bit_qweight(void **state)
{
    (void)state;
    /* K = 8, N = 2: one row of words; column n packs q[n, 0..7], k = 0 lowest */
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 2, 8, 4, -1, 1), 0);
    for (int k = 0; k < 8; k++) {
        q.q[k] = (uint8_t)(k + 1);
        q.q[8 + k] = (uint8_t)(15 - k);
    }
    int32_t qw[2];
    assert_int_equal(gptq_pack_qweight(&q, qw), 0);
    assert_int_equal((uint32_t)qw[0], 0x87654321u);
    assert_int_equal((uint32_t)qw[1], 0x89ABCDEFu);
    uint8_t back[16];
    assert_int_equal(gptq_unpack_qweight(qw, 8, 2, 4, back), 0);
    assert_memory_equal(back, q.q, 16);
    qweight_free(&q);
    /* 2 and 8 bits */
    assert_int_equal(qweight_alloc(&q, 1, 16, 2, -1, 1), 0);
    for (int k = 0; k < 16; k++)
        q.q[k] = (uint8_t)(k % 4);
    assert_int_equal(gptq_pack_qweight(&q, qw), 0);
    assert_int_equal((uint32_t)qw[0], 0xE4E4E4E4u); /* 0,1,2,3 -> 0b11100100 */
    qweight_free(&q);
    assert_int_equal(qweight_alloc(&q, 1, 4, 8, -1, 1), 0);
    const uint8_t b8[4] = {0x01, 0x80, 0xFF, 0x7F};
    memcpy(q.q, b8, 4);
    assert_int_equal(gptq_pack_qweight(&q, qw), 0);
    assert_int_equal((uint32_t)qw[0], 0x7FFF8001u);
    qweight_free(&q);
}

static void test_gptq_qzeros(void **state)
{
    (void)state;
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 16, 64, 4, 32, 1), 0);
    for (int i = 0; i < q.ngroups * 16; i++)
        q.zeros[i] = 8.0f;
    int32_t qz[2 * 2];
    assert_int_equal(gptq_pack_qzeros(&q, 0, qz), 0); /* v1: zero - 1 */
    for (int i = 0; i < 4; i++)
        assert_int_equal((uint32_t)qz[i], 0x77777777u);
    float z[32];
    assert_int_equal(gptq_unpack_qzeros(qz, 2, 16, 4, 0, z), 0);
    for (int i = 0; i < 32; i++)
        assert_true(z[i] == 8.0f);
    assert_int_equal(gptq_pack_qzeros(&q, 1, qz), 0); /* v2: exact */
    for (int i = 0; i < 4; i++)
        assert_int_equal((uint32_t)qz[i], 0x88888888u);
    /* asym zero 0 is not representable in v1, fine in v2 */
    q.zeros[3] = 0.0f;
    assert_int_equal(gptq_pack_qzeros(&q, 0, qz), -1);
    assert_non_null(strstr(llmq_last_error(), "gptq_v2"));
    assert_int_equal(gptq_pack_qzeros(&q, 1, qz), 0);
    assert_int_equal((uint32_t)qz[0], 0x88880888u);
    q.zeros[3] = 2.5f;
    assert_int_equal(gptq_pack_qzeros(&q, 1, qz), -1);
    qweight_free(&q);
}

static void test_gptq_fits(void **state)
{
    (void)state;
    const char *why;
    assert_true(gptq_fits(4096, 4096, 4, &why));
    assert_true(gptq_fits(64, 64, 3, &why)); /* 64*3 = 6 words */
    assert_false(gptq_fits(172, 64, 4, &why));
    assert_non_null(strstr(why, "in_features"));
    assert_false(gptq_fits(64, 172, 4, &why));
    assert_non_null(strstr(why, "out_features"));
    assert_false(gptq_fits(48, 64, 3, &why));
    assert_false(gptq_fits(64, 64, 5, &why));
    assert_true(gptq_fits(64, 4, 8, NULL));
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 64, 172, 4, 32, 1), 0);
    int32_t dummy[1];
    assert_int_equal(gptq_pack_qweight(&q, dummy), -1);
    qweight_free(&q);
}

static void test_gptq_import_roundtrip(void **state)
{
    (void)state;
    enum { N = 32, K = 64 };
    float W[N * K], D1[N * K], D2[N * K];
    for (int i = 0; i < N * K; i++)
        W[i] = 0.05f * grand() + 0.01f;
    llmq_qweight q, r;
    assert_int_equal(rtn_quantize(W, N, K, 4, 16, 0, 1, &q), 0);
    int32_t qw[K / 8 * N], qz[4 * N / 8];
    uint16_t sc[4 * N];
    assert_int_equal(gptq_pack_qweight(&q, qw), 0);
    assert_int_equal(gptq_pack_qzeros(&q, 1, qz), 0);
    gptq_pack_scales(&q, sc);
    assert_int_equal(gptq_import(qw, qz, sc, q.g_idx, K, N, 4, 16, 4, 1, 0, &r), 0);
    qweight_dequant(&q, D1);
    qweight_dequant(&r, D2);
    assert_memory_equal(D1, D2, sizeof D1); /* fp16 scales: bit exact */
    qweight_free(&r);
    int32_t bad[K];
    memcpy(bad, q.g_idx, sizeof bad);
    bad[5] = 4;
    assert_int_equal(gptq_import(qw, qz, sc, bad, K, N, 4, 16, 4, 1, 0, &r), -1);
    assert_int_equal(gptq_import(qw, qz, sc, q.g_idx, K, N, 4, 16, 3, 1, 0, &r), -1);
    qweight_free(&q);
}

static void test_awq_order(void **state)
{
    (void)state;
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 8, 2, 4, -1, 0), 0);
    for (int n = 0; n < 8; n++) {
        q.q[n * 2 + 0] = (uint8_t)n;
        q.q[n * 2 + 1] = (uint8_t)(15 - n);
        q.zeros[n] = (float)n;
    }
    int32_t qw[2], qz[1];
    assert_int_equal(awq_pack_qweight(&q, qw), 0);
    /* nibbles, lowest first, hold elements 0,2,4,6,1,3,5,7 */
    assert_int_equal((uint32_t)qw[0], 0x75316420u);
    assert_int_equal((uint32_t)qw[1], 0x8ACE9BDFu);
    assert_int_equal(awq_pack_qzeros(&q, qz), 0);
    assert_int_equal((uint32_t)qz[0], 0x75316420u);
    uint8_t back[16];
    float z[8];
    assert_int_equal(awq_unpack_qweight(qw, 2, 8, back), 0);
    assert_memory_equal(back, q.q, 16);
    assert_int_equal(awq_unpack_qzeros(qz, 1, 8, z), 0);
    for (int n = 0; n < 8; n++)
        assert_true(z[n] == (float)n);
    /* act-order g_idx does not fit AWQ */
    q.g_idx[0] = 1;
    assert_int_equal(awq_pack_qweight(&q, qw), -1);
    qweight_free(&q);
    const char *why;
    assert_false(awq_fits(64, 12, 4, &why));
    assert_false(awq_fits(64, 16, 3, &why));
}

static void test_llmq_layout(void **state)
{
    (void)state;
    llmq_qweight q;
    assert_int_equal(qweight_alloc(&q, 2, 3, 4, 2, 1), 0);
    const uint8_t codes[6] = {1, 2, 3, 15, 0, 9};
    memcpy(q.q, codes, 6);
    assert_int_equal(llmqfmt_row_bytes(3, 4), 2);
    uint8_t packed[4], back[6];
    llmqfmt_pack_codes(&q, packed);
    /* even k low nibble, odd k high nibble, odd K padded with 0 */
    assert_int_equal(packed[0], 0x21);
    assert_int_equal(packed[1], 0x03);
    assert_int_equal(packed[2], 0x0F);
    assert_int_equal(packed[3], 0x09);
    assert_int_equal(llmqfmt_unpack_codes(packed, 2, 3, 4, back), 0);
    assert_memory_equal(back, codes, 6);
    /* a 3-bit weight in the same container rejects a code of 9 */
    assert_int_equal(llmqfmt_unpack_codes(packed, 2, 3, 3, back), -1);
    /* params transpose to [N, ng] fp16 */
    q.scales[0] = 0.5f, q.scales[1] = 0.25f, q.scales[2] = 1.0f, q.scales[3] = 2.0f; /* [g][n] */
    q.zeros[0] = 8, q.zeros[1] = 7, q.zeros[2] = 6, q.zeros[3] = 5;
    uint16_t s[4], z[4];
    llmqfmt_pack_params(&q, s, z);
    assert_int_equal(s[0], llmq_f32_to_f16(0.5f));  /* n0 g0 */
    assert_int_equal(s[1], llmq_f32_to_f16(1.0f));  /* n0 g1 */
    assert_int_equal(s[2], llmq_f32_to_f16(0.25f)); /* n1 g0 */
    assert_int_equal(z[3], llmq_f32_to_f16(5.0f));
    float s2[4], z2[4];
    llmqfmt_unpack_params(s, z, 2, 2, s2, z2);
    assert_memory_equal(s2, q.scales, sizeof s2);
    assert_memory_equal(z2, q.zeros, sizeof z2);
    qweight_free(&q);
    /* 8-bit: one byte per code */
    assert_int_equal(qweight_alloc(&q, 1, 3, 8, -1, 1), 0);
    q.q[0] = 200, q.q[1] = 0, q.q[2] = 255;
    assert_int_equal(llmqfmt_row_bytes(3, 8), 3);
    llmqfmt_pack_codes(&q, packed);
    assert_memory_equal(packed, q.q, 3);
    qweight_free(&q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_half_even),
        cmocka_unit_test(test_rtn_sym4_hand),
        cmocka_unit_test(test_rtn_sym_scale_rule),
        cmocka_unit_test(test_rtn_asym_hand),
        cmocka_unit_test(test_rtn_zero_rows),
        cmocka_unit_test(test_rtn_partial_group),
        cmocka_unit_test(test_rtn_scale_f16),
        cmocka_unit_test(test_rtn_error_bound),
        cmocka_unit_test(test_rtn_bad_args),
        cmocka_unit_test(test_nf4_codebook),
        cmocka_unit_test(test_nf4_pack_high_nibble),
        cmocka_unit_test(test_nf4_blocks_and_error),
        cmocka_unit_test(test_dynmap),
        cmocka_unit_test(test_nf4_double_quant),
        cmocka_unit_test(test_bits_roundtrip),
        cmocka_unit_test(test_gptq_3bit_layout),
        cmocka_unit_test(test_gptq_4bit_qweight),
        cmocka_unit_test(test_gptq_qzeros),
        cmocka_unit_test(test_gptq_fits),
        cmocka_unit_test(test_gptq_import_roundtrip),
        cmocka_unit_test(test_awq_order),
        cmocka_unit_test(test_llmq_layout),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
