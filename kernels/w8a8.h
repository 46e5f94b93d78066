/* W8A8 on the GPU: per-token int8 quantization fused into its producers,
 * and the int8 x int8 linear on tensor cores through cuBLASLt.
 *
 * The arithmetic is quant/w8a8_ref.h's (SmoothQuant's grids: per-token
 * activations, per-output-channel weights, absmax / 127, round half to even).
 * All pointers are device memory; activations are row-major [rows, cols] in
 * storage type dt (F16, BF16 or F32); int8 codes are row-major [rows, cols],
 * per-token scales fp32 [rows]. Work is enqueued on `stream` (a
 * cudaStream_t passed as void *; NULL = the legacy default stream) and is
 * asynchronous. Every function returns 0, or -1 with llmq_fail(); none
 * exits. Only defined when llmq is built with CUDA (LLMQ_HAVE_CUDA).
 *
 * The quantizing producers run one thread block per row and read each input
 * element from device memory once: the row's values stay in shared memory
 * (dt-sized, cols * sizeof(dt) bytes) between the absmax and the rounding.
 *
 * The linear: cuBLASLt with CUBLAS_COMPUTE_32I on int8 A/B ("TN": the weight
 * [N,K] is the transposed operand). cuBLASLt's int8 kernels need K % 4 == 0,
 * N % 4 == 0 and 4-byte-aligned pointers (16-byte for the fast kernels);
 * other shapes fail with a message. The per-token x per-channel rescale is
 * either
 *   LLMQ_W8A8_EPI_FUSED:   inside cuBLASLt's epilogue, through its
 *                          outer-vector scale modes (A/B scale mode
 *                          CUBLASLT_MATMUL_MATRIX_SCALE_OUTER_VEC_32F, D in
 *                          dt) -- used only where this cuBLASLt accepts them
 *                          for int8 (probed by llmq_w8a8_create); or
 *   LLMQ_W8A8_EPI_RESCALE: the exact int32 product from cuBLASLt into a
 *                          scratch buffer (M x N x 4 bytes, kept and grown
 *                          on demand), then llmq_w8a8_rescale (int32 -> dt).
 *                          Where that would pass the scratch budget (default
 *                          512 MiB) M is cut into chunks of whole multiples
 *                          of 64 rows. Chunks small enough for the int32
 *                          tile to stay in L2 (24 MiB) were measured 1.4-1.7x
 *                          slower at M >= 2048 on an H200 (smaller GEMMs run
 *                          less efficiently than the L2 saves;
 *                          docs/BENCHMARKS_W8A8_NF4.md), hence the large budget.
 *   LLMQ_W8A8_EPI_GEMV:    decode batches (M <= LLMQ_W8A8_GEMV_MAX_M):
 *                          llmq_w8a8_gemv, llmq's own kernel (w8a8_gemv.cu),
 *                          int8 tensor cores on the same row-major weight,
 *                          the rescale in its epilogue, one launch.
 * On the H200 tested, cuBLASLt 13.0 did not accept the outer-vector int8
 * epilogue, so AUTO runs the GEMV up to LLMQ_W8A8_GEMV_MAX_M rows and the
 * rescale path beyond. */
#ifndef LLMQ_KERNELS_W8A8_H
#define LLMQ_KERNELS_W8A8_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "src/dtype.h"

/* ---- quantizing producers ---- */

/* q, scale = per-token int8 of x [rows, cols]. */
int llmq_quant_per_token(void *stream, llmq_dtype dt, int8_t *q, float *scale, const void *x, int rows, int cols);

/* Fused residual add + LlamaRMSNorm + per-token int8: if delta != NULL,
 * x = x + delta is written back to x (the residual stream), then
 * q, scale = int8(w * rmsnorm(x)). x, delta [rows, dim], w [dim]. */
int llmq_rmsnorm_quant(void *stream, llmq_dtype dt, int8_t *q, float *scale, void *x, const void *delta,
                       const void *w, int rows, int dim, float eps);

/* Fused silu(gate) * up + per-token int8. gate/up [rows, cols], row stride
 * ld elements (ld = 2 * cols and up = gate + cols for a fused gate_up). */
int llmq_silu_mul_quant(void *stream, llmq_dtype dt, int8_t *q, float *scale, const void *gate, const void *up,
                        int ld, int rows, int cols);

/* The two producers above fed by W8A8 linears' int32 products instead of
 * their dt outputs, each input value read as rnd((acc[r,c] * tok[r]) *
 * ch[c]) (what llmq_w8a8_rescale would have written): the prefill linears
 * whose outputs only these producers read (o_proj -> the residual add,
 * gate/up -> SiLU*up) skip the rescale pass and its dt round trip. The
 * token scales may be the array `scale` is written to (each row's block
 * reads its own first). acc rows are dim / cols long. */
int llmq_rmsnorm_quant_acc(void *stream, llmq_dtype dt, int8_t *q, float *scale, void *x, const int32_t *delta,
                           const float *d_tok, const float *d_ch, const void *w, int rows, int dim, float eps);
int llmq_silu_mul_quant_acc(void *stream, llmq_dtype dt, int8_t *q, float *scale, const int32_t *gate,
                            const float *g_ch, const int32_t *up, const float *u_ch, const float *s_tok, int rows,
                            int cols);

/* y [M,N] (dt) = ((float)acc * s_tok[m]) * s_ch[n]; acc int32 [M,N], N % 4 == 0. */
int llmq_w8a8_rescale(void *stream, llmq_dtype dt, void *y, const int32_t *acc, const float *s_tok,
                      const float *s_ch, int M, int N);

/* ---- the decode-batch linear, rescale fused ---- */

/* AUTO's GEMV up to this many rows (a decode batch; the weight is read once
 * per 16 rows, so beyond it cuBLASLt's tiles win). */
#define LLMQ_W8A8_GEMV_MAX_M 16

/* y [M,N] (dt) = ((float)(x . w^T)[m,n] * s_tok[m]) * s_ch[n], x [M,K] and
 * w [N,K] int8 row-major, K % 4 == 0, x and w 4-byte aligned (16-byte and
 * K % 128 == 0 for the fast loop). Any M >= 0; the exact int32 sum, so y
 * equals int8_gemm_ref's bit for bit. Launched with programmatic dependent
 * launch: its weight loads overlap the kernel before. */
int llmq_w8a8_gemv(void *stream, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok, const int8_t *w,
                   const float *s_ch, int M, int N, int K);

/* Up to this many linears that read the same x in one launch. */
#define LLMQ_W8A8_GEMV_GROUP 3

/* llmq_w8a8_gemv for n <= LLMQ_W8A8_GEMV_GROUP linears that read the same
 * x (q/k/v, gate/up) in one launch: y[i] [M, N[i]] from w[i] [N[i], K] and
 * s_ch[i]. The same numbers as n separate calls; one launch instead of n,
 * and one grid over all their channel tiles. */
int llmq_w8a8_gemv_group(void *stream, llmq_dtype dt, int n, void *const *y, const int8_t *x, const float *s_tok,
                         const int8_t *const *w, const float *const *s_ch, const int *N, int M, int K);

/* Measurement and test knobs of llmq_w8a8_gemv: warps per block (0:
 * planned; else the largest split up to it), no PDL. Process-wide. */
void llmq_w8a8_gemv_tune(int warps, int no_pdl);

/* ---- int8 GEMM ---- */

typedef struct llmq_w8a8_ctx llmq_w8a8_ctx;

enum { LLMQ_W8A8_EPI_AUTO = 0, LLMQ_W8A8_EPI_FUSED = 1, LLMQ_W8A8_EPI_RESCALE = 2, LLMQ_W8A8_EPI_GEMV = 3 };

/* The rescale path's default scratch budget in bytes. */
#define LLMQ_W8A8_DEFAULT_SCRATCH ((size_t)512 << 20)

/* A cuBLASLt handle, a 32 MiB workspace and the rescale scratch, bound to
 * `stream`. Probes whether the fused epilogue is available. */
int llmq_w8a8_create(llmq_w8a8_ctx **out, void *stream);
void llmq_w8a8_destroy(llmq_w8a8_ctx *c);

/* 1 if cuBLASLt accepted the outer-vector int8 epilogue at create time. */
int llmq_w8a8_fused_available(const llmq_w8a8_ctx *c);

/* Epilogue choice (AUTO: the GEMV up to LLMQ_W8A8_GEMV_MAX_M rows, then
 * cuBLASLt fused when available, else rescale) and the
 * scratch budget of the rescale path in bytes (0: one GEMM over all of M). */
int llmq_w8a8_set_epilogue(llmq_w8a8_ctx *c, int epi);
void llmq_w8a8_set_scratch_limit(llmq_w8a8_ctx *c, size_t bytes);

/* The epilogue the last llmq_w8a8_gemm call used: "fused (cuBLASLt
 * outer-vector scales)", "int32 + rescale kernel" or "int8 GEMV, rescale
 * in its epilogue"; "" before any call. */
const char *llmq_w8a8_last_epilogue(const llmq_w8a8_ctx *c);

/* acc [M,N] int32 = x [M,K] int8 . w [N,K]^T int8, exact. */
int llmq_int8_gemm_i32(llmq_w8a8_ctx *c, int32_t *acc, const int8_t *x, const int8_t *w, int M, int N, int K);

/* The W8A8 linear: y [M,N] (dt) = ((float)(x . w^T) * s_tok[m]) * s_ch[n]. */
int llmq_w8a8_gemm(llmq_w8a8_ctx *c, llmq_dtype dt, void *y, const int8_t *x, const float *s_tok, const int8_t *w,
                   const float *s_ch, int M, int N, int K);

#ifdef __cplusplus
}
#endif

#endif
