#include "dtype.h"

#include <math.h>
#include <string.h>

#include "error.h"

static const struct {
    const char *name;
    size_t size;
} g_dtypes[LLMQ_DTYPE_COUNT] = {
    [LLMQ_F32] = {"F32", 4}, [LLMQ_F16] = {"F16", 2}, [LLMQ_BF16] = {"BF16", 2},
    [LLMQ_F64] = {"F64", 8}, [LLMQ_I64] = {"I64", 8}, [LLMQ_I32] = {"I32", 4},
    [LLMQ_I16] = {"I16", 2}, [LLMQ_I8] = {"I8", 1},   [LLMQ_U8] = {"U8", 1},
    [LLMQ_BOOL] = {"BOOL", 1},
};

size_t llmq_dtype_size(llmq_dtype dt) { return (unsigned)dt < LLMQ_DTYPE_COUNT ? g_dtypes[dt].size : 0; }

const char *llmq_dtype_name(llmq_dtype dt) { return (unsigned)dt < LLMQ_DTYPE_COUNT ? g_dtypes[dt].name : "?"; }

int llmq_dtype_from_name(const char *name, llmq_dtype *out)
{
    for (int i = 0; i < LLMQ_DTYPE_COUNT; i++) {
        if (strcmp(name, g_dtypes[i].name) == 0) {
            *out = (llmq_dtype)i;
            return 0;
        }
    }
    return -1;
}

int llmq_dtype_is_float(llmq_dtype dt)
{
    return dt == LLMQ_F32 || dt == LLMQ_F16 || dt == LLMQ_BF16 || dt == LLMQ_F64;
}

static uint32_t f32_bits(float f)
{
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float bits_f32(uint32_t u)
{
    float f;
    memcpy(&f, &u, 4);
    return f;
}

float llmq_f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f;
    uint32_t man = h & 0x3ff;
    if (exp == 0) {
        if (man == 0)
            return bits_f32(sign);
        /* subnormal: value = man * 2^-24 */
        float v = (float)man * 5.9604644775390625e-8f;
        return sign ? -v : v;
    }
    if (exp == 31)
        return bits_f32(sign | 0x7f800000u | (man << 13));
    return bits_f32(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t llmq_f32_to_f16(float f)
{
    uint32_t u = f32_bits(f);
    uint16_t sign = (uint16_t)((u >> 16) & 0x8000);
    uint32_t absu = u & 0x7fffffffu;
    if (absu >= 0x7f800000u) /* Inf or NaN */
        return sign | 0x7c00 | (absu > 0x7f800000u ? 0x200 : 0);
    if (absu >= 0x477ff000u) /* rounds to >= 65520: overflow to Inf */
        return sign | 0x7c00;
    if (absu < 0x38800000u) { /* below the smallest normal half: subnormal or zero */
        /* Round |f| / 2^-24 to nearest even integer; rintf does round-half-even. */
        float a = bits_f32(absu);
        return sign | (uint16_t)rintf(a * 16777216.0f);
    }
    uint32_t mant_round = absu + 0xfffu + ((absu >> 13) & 1); /* round to nearest even */
    return sign | (uint16_t)((mant_round - 0x38000000u) >> 13);
}

float llmq_bf16_to_f32(uint16_t b) { return bits_f32((uint32_t)b << 16); }

uint16_t llmq_f32_to_bf16(float f)
{
    uint32_t u = f32_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) /* NaN: keep it a (quiet) NaN */
        return (uint16_t)((u >> 16) | 0x40);
    u += 0x7fffu + ((u >> 16) & 1);
    return (uint16_t)(u >> 16);
}

static float load_f(const void *src, llmq_dtype dt, size_t i)
{
    switch (dt) {
    case LLMQ_F32: return ((const float *)src)[i];
    case LLMQ_F16: return llmq_f16_to_f32(((const uint16_t *)src)[i]);
    case LLMQ_BF16: return llmq_bf16_to_f32(((const uint16_t *)src)[i]);
    case LLMQ_F64: return (float)((const double *)src)[i];
    default: return 0.0f;
    }
}

int llmq_convert(void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt, size_t n)
{
    if (!llmq_dtype_is_float(dst_dt) || !llmq_dtype_is_float(src_dt))
        return llmq_fail("cannot convert %s to %s", llmq_dtype_name(src_dt), llmq_dtype_name(dst_dt));
    if (dst_dt == src_dt) {
        memmove(dst, src, n * llmq_dtype_size(dst_dt));
        return 0;
    }
    if (dst_dt == LLMQ_F64 && src_dt != LLMQ_F64) {
        for (size_t i = 0; i < n; i++)
            ((double *)dst)[i] = load_f(src, src_dt, i);
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        float v = load_f(src, src_dt, i);
        switch (dst_dt) {
        case LLMQ_F32: ((float *)dst)[i] = v; break;
        case LLMQ_F16: ((uint16_t *)dst)[i] = llmq_f32_to_f16(v); break;
        case LLMQ_BF16: ((uint16_t *)dst)[i] = llmq_f32_to_bf16(v); break;
        default: break;
        }
    }
    return 0;
}

void llmq_round_through(float *x, size_t n, llmq_dtype dt)
{
    if (dt == LLMQ_F16)
        for (size_t i = 0; i < n; i++)
            x[i] = llmq_f16_to_f32(llmq_f32_to_f16(x[i]));
    else if (dt == LLMQ_BF16)
        for (size_t i = 0; i < n; i++)
            x[i] = llmq_bf16_to_f32(llmq_f32_to_bf16(x[i]));
}
