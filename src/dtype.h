/* Element types of tensors on disk and in memory, and conversions between
 * the float types. The names match safetensors' dtype strings. */
#ifndef LLMQ_DTYPE_H
#define LLMQ_DTYPE_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    LLMQ_F32 = 0,
    LLMQ_F16,
    LLMQ_BF16,
    LLMQ_F64,
    LLMQ_I64,
    LLMQ_I32,
    LLMQ_I16,
    LLMQ_I8,
    LLMQ_U8,
    LLMQ_BOOL,
    LLMQ_DTYPE_COUNT
} llmq_dtype;

/* Bytes per element. */
size_t llmq_dtype_size(llmq_dtype dt);
/* "F32", "F16", "BF16", ... as written in safetensors headers. */
const char *llmq_dtype_name(llmq_dtype dt);
/* Parse a safetensors dtype string; returns -1 if unknown. */
int llmq_dtype_from_name(const char *name, llmq_dtype *out);
/* 1 for F32, F16, BF16, F64. */
int llmq_dtype_is_float(llmq_dtype dt);

/* IEEE half and bfloat16 <-> float, round to nearest even, NaN/Inf kept. */
float llmq_f16_to_f32(uint16_t h);
uint16_t llmq_f32_to_f16(float f);
float llmq_bf16_to_f32(uint16_t b);
uint16_t llmq_f32_to_bf16(float f);

/* Convert n elements between float types (F32, F16, BF16, F64).
 * Returns -1 (with llmq_fail) for a non-float type. */
int llmq_convert(void *dst, llmq_dtype dst_dt, const void *src, llmq_dtype src_dt, size_t n);

/* Round every element of a float32 array through dt and back (what storing
 * it in dt would do); a no-op for F32. */
void llmq_round_through(float *x, size_t n, llmq_dtype dt);

#endif
