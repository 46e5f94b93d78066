/* W4A16 and W8A16 linears on the GPU from GPTQ checkpoints.
 *
 * The arithmetic is quant/wna16_ref.h's: y = x . W^T with
 * W[n,k] = scales[g][n] * (q[k,n] - zero[g][n]), g = g_idx[k], x and y in
 * the backend's storage type (F16 or BF16), fp32 accumulation. The weight is
 * dequantized to dt in registers (rounded once: s * (q - z) is exact in
 * fp32, so the kernel's W equals the reference's W rounded to dt) and
 * multiplied on the tensor cores (mma.sync m16n8k16, fp32 accumulators);
 * the fp16 GEMV at M <= 8 instead multiplies the exact q - z and applies
 * each group's scale to its fp32 partial sums (no rounding of W at all).
 *
 * Load-time repack (wna16_prepare). The checkpoint stays GPTQ; the GPU copy
 * is rearranged once so that the product streams it with one 16-byte load
 * per lane and no index arithmetic:
 *   - act-order: the input channels are sorted by group (a stable counting
 *     sort on g_idx), so every group is a contiguous run of repacked rows;
 *     a row -> channel table (perm) makes the kernel gather x's columns on
 *     the fly, and x itself is never rewritten. Without act-order (g_idx =
 *     k / G, static groups included) the table is the identity and skipped.
 *   - each group's run is padded to a multiple of 16 rows (one mma k-step)
 *     and K to a multiple of the 16-byte chunk (64 rows at 4 bits, 32 at 8);
 *     padding rows read x = 0. So any group size (32/64/128/-1, a short last
 *     group, K = 172) works with one scale per k-step.
 *   - codes: per 16 output channels x one chunk of rows, 512 bytes, one
 *     int4 per lane of a warp, its nibbles (bytes at 8 bits) placed where
 *     the lane's A fragment of m16n8k16 wants them, so that one LOP3 (PRMT
 *     at 8 bits) makes a pair of fp16 values 1024 + q (the 0x6400 exponent
 *     trick) and (h - (1024 + z)) * s finishes the dequantization;
 *   - scales and zeros: per (group, 16 channels) 8 uint2 {half2 scales of
 *     channels n and n+8, half2 zeros of the same}, one 8-byte load per lane
 *     when the group changes. 4 bytes per channel per group, against GPTQ's
 *     2.5.
 * N is padded to a multiple of 16 with zero scales (outputs not written).
 *
 * Paths of wna16_linear:
 *   STREAM   decode (any M; fastest at M = 1; kernels/wna16_stream.cu):
 *            one block per 16 channels, its warps (planned per shape so
 *            that the grid is resident in one wave) each stream a
 *            contiguous run of chunks into registers with two batches of
 *            16-byte loads in flight, the run's scales staged in shared
 *            memory first; the warps add their sums in shared memory.
 *            Static groups run straight-line batches; fp16 at M <= 8 folds
 *            the zero point per group (the mma takes the codes as 1024 + q);
 *            at M = 1 x is staged in shared memory in fragment order.
 *            Launched with programmatic dependent launch.
 *   SLICE    decode at a few rows (kernels/wna16_slice.cu): a block owns
 *            a slice of K and 1-32 tiles, stages x for its slice and 8 or
 *            16 rows once in shared memory (in fragment order, with the
 *            fold's per-row group sums), and each warp streams its run of
 *            one tile's codes through its own cp.async ring in shared
 *            memory, each A fragment feeding one mma per 8 rows (more rows:
 *            further row blocks); the K slices of the same tiles form a
 *            thread-block cluster (<= 8) whose blocks send each other
 *            their sums (st.async into distributed shared memory); one
 *            block per SM. Static groups of whole chunks only (GPTQ
 *            g64..g128 at 4 bits, g32..g128 at 8, and per-channel weights
 *            of real shapes), act-order too (the repack sorts rows by
 *            group; x is gathered through perm when it is staged, or from
 *            9 rows sorted into the attached scratch first), and NF4
 *            (wna16_prepare_nf4: a table of codebook pairs in shared
 *            memory, the block's absmax per chunk). Launched with
 *            programmatic dependent launch.
 *   GEMV     round 2's decode kernel (any M, meant for M <= 16): blocks of 4 warps own 64
 *            channels x one slice of K; the codes come by bulk copies
 *            (cp.async.bulk) into a 2-stage shared-memory ring per block,
 *            after the slice's scales/zeros and step -> group table; x
 *            (gathered through the act-order table) is staged in shared
 *            memory once. The K slices of a tile group form a thread-block
 *            cluster (<= 8) whose blocks send each other their partial
 *            sums (st.async into distributed shared memory). The split is
 *            picked from the occupancy so that all blocks are resident at
 *            once (wna16_gemv_tune tunes it).
 *            fp16 at M <= 8: the mma takes q - z and the scales multiply the
 *            per-group sums in fp32; otherwise W is rounded to dt first.
 *            Launched with programmatic dependent launch: the weight copies
 *            start before the previous kernel on the stream has finished.
 *            Needs compute capability 9.0 (AUTO falls back to MMA below).
 *   MMA      the first version (any M): x loads and scale lookups next to
 *            each mma, up to 8 row tiles per fragment; larger M re-streams
 *            the weight per 64 rows. Slower than GEMV at decode and ~10x
 *            slower than cuBLAS at M >= 128: a cross-check, and the
 *            fallback when nothing better is available.
 *   DENSE    cuBLAS (b->linear) on a dense dt copy of W kept by the handle
 *            (wna16_cache_dense): as fast as the dense model, at its memory.
 *   SCRATCH  dequantize W into a caller's scratch buffer (N*K*2 bytes) and
 *            call cuBLAS: no persistent dense copy, one extra pass over a
 *            dense W per call.
 * AUTO takes STREAM at M <= WNA16_STREAM_MAX_M without act-order (STREAM
 * gathers x through perm per k-step; SLICE and GEMV stage it once) unless
 * the tuning knob ring is set; SLICE from WNA16_SLICE_MIN_M rows (from one
 * under act-order) to WNA16_SLICE_MAX_M (WNA16_SLICE_DENSE_M when a dense
 * copy is cached), where it takes the weight (static groups of whole
 * chunks in the sorted order) and neither ring nor slice_off is set; then
 * GEMV up to WNA16_GEMV_MAX_M rows (when its shared memory holds a
 * slice's scales: always on 7B shapes), else DENSE when cached, else
 * SCRATCH when a scratch is attached, else MMA.
 *
 * Measured: docs/BENCHMARKS_KERNELS.md (H200, then H100), kernels/WNA16_NOTES.md.
 *
 * All functions return 0, or -1 with llmq_fail(); none exits. b must be a
 * CUDA backend (llmq_backend_cuda); work is enqueued on its stream. Only
 * defined when llmq is built with CUDA (LLMQ_HAVE_CUDA). */
#ifndef LLMQ_KERNELS_WNA16_H
#define LLMQ_KERNELS_WNA16_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#include "quant/nf4.h"
#include "src/backend.h"

typedef struct wna16_weight wna16_weight;

enum {
    WNA16_AUTO = 0,
    WNA16_MMA = 1,
    WNA16_DENSE = 2,
    WNA16_SCRATCH = 3,
    WNA16_GEMV = 4,
    WNA16_STREAM = 5,
    WNA16_SLICE = 6
};

/* AUTO's largest M for the STREAM and GEMV paths (docs/BENCHMARKS_KERNELS.md:
 * STREAM stages x in shared memory only at M = 1, and loses to GEMV above),
 * and SLICE's range (from 2 rows since the sixth session's H100 runs: 3-7 %
 * ahead of GEMV in the 7B-slice decode at batch 4-8). */
#define WNA16_STREAM_MAX_M 1
#define WNA16_SLICE_MIN_M 2
#define WNA16_SLICE_MAX_M 64
/* With a dense copy cached, AUTO's largest M for SLICE (DENSE above): on
 * the H100, w4g128 at M = 32 the slice kernel took 0.62-0.81 of cuBLAS
 * fp16's time on the 7B shapes, at M = 64 1.18-1.26 (docs/BENCHMARKS.md,
 * fifth session). */
#define WNA16_SLICE_DENSE_M 32
#define WNA16_GEMV_MAX_M 16

/* Repack and upload one GPTQ linear (host arrays, FORMATS.md layout):
 * qweight int32 [K*bits/32, N], qzeros int32 [ng, N*bits/32] (v2: zeros as
 * stored, else stored + 1), scales fp16 bits [ng, N], g_idx int32 [K] with
 * ng = max(g_idx) + 1. bits 4 or 8. K and N need not be multiples of
 * 32/bits (an extension for llmq-format weights such as stories260K's
 * K = 172: GPTQ checkpoints always are): the arrays then have
 * ceil(K*bits/32) rows and ceil(N*bits/32) columns, the last word partly
 * filled.
 * Synchronizes (the host arrays may be freed on return). */
int wna16_prepare(wna16_weight **out, llmq_backend *b, const int32_t *qweight, const int32_t *qzeros,
                  const uint16_t *scales, const int32_t *g_idx, int K, int N, int bits, int v2);

/* Repack and upload an NF4 weight (quant/nf4.h: W [N, K] flattened in
 * blocks of 64, double quantization allowed) for the SLICE path: each
 * block (64 values of one output channel, K % 64 == 0) is one chunk of the
 * layout above, its two-code bytes placed where a lane's A registers want
 * them (GvDeqNf4), its absmax decoded here and kept in fp32 where the
 * scales go (8 bytes per channel pair per block, as {scale, zero} pairs
 * take: 0.5625 bytes per weight on the device against the checkpoint's
 * 0.516 with double quantization, so that the dense paths reproduce
 * nf4_dequantize bit for bit). The slice kernel maps code pairs to codebook values in dt through
 * a table in shared memory and multiplies each block's fp32 sums by its
 * absmax; the dense paths dequantize as nf4_dequantize does, rounded to dt
 * once. AUTO takes SLICE at any M unless a dense copy (above
 * WNA16_SLICE_DENSE_M rows) or a scratch (above WNA16_SLICE_MAX_M) is
 * there; STREAM, GEMV and MMA refuse the weight. The slice kernel needs
 * compute capability 9.0 and K a multiple of 256 (wna16_nf4_supported).
 * Synchronizes. */
int wna16_prepare_nf4(wna16_weight **out, llmq_backend *b, const llmq_nf4 *q, int K, int N);

/* 1 when an NF4 weight of K inputs can run on b's device through
 * wna16_prepare_nf4's weight (compute capability >= 9.0, K % 256 == 0,
 * F16 or BF16), else 0. */
int wna16_nf4_supported(llmq_backend *b, int K);

/* A second device copy of a prepared weight (benchmarks rotate copies so
 * that the weight is read from DRAM, not L2). */
int wna16_clone(wna16_weight **out, llmq_backend *b, const wna16_weight *src);

void wna16_free(wna16_weight *w);

/* Shape and footprint: K, N, bits, and the bytes of the repacked codes and
 * scales/zeros that one product reads. */
void wna16_info(const wna16_weight *w, int *K, int *N, int *bits, size_t *code_bytes, size_t *param_bytes);

/* y [M, N] = x [M, K] . W^T in b->dt (F16 or BF16); x 4-byte aligned. */
int wna16_linear(wna16_weight *w, llmq_backend *b, void *y, const void *x, int M);

/* The same with the path forced (WNA16_AUTO, _STREAM, _GEMV, _MMA, _DENSE, _SCRATCH); DENSE
 * and SCRATCH fail when no dense copy / no large enough scratch is there. */
int wna16_linear_path(wna16_weight *w, llmq_backend *b, void *y, const void *x, int M, int path);

/* Tuning of the GEMV path, process-wide (benchmarks sweep it; 0 in a field
 * keeps its default): ksplit_max, the most K slices (thread-block cluster
 * size, <= 8; default 8); blocks_per_sm, the blocks per multiprocessor the
 * K split aims for (default 4; a split that stays in one wave of resident
 * blocks is preferred to one that spills into a second);
 * stages_max, the depth of each block's shared-memory ring of weight stages
 * (default 2, 8 KB each); no_pdl, 1 to launch without programmatic
 * dependent launch (default: with it, so that a call's weight copies
 * overlap the end of the kernel before it); exact_dequant, 1 to round W to
 * fp16 before the mma at M <= 8 too (default: the mma takes q - z and the
 * scales multiply the per-group sums in fp32); meta_loads, 1 to fetch the
 * scales and groups with ordinary loads (round 1) instead of bulk copies
 * ahead of the codes; refill_last_warp, 1 for round 3's ring refill without a
 * block barrier (each warp counts itself out of a stage and the last one
 * refills it; default: round 2's barrier before each refill); zero_fold, 1
 * for round 3's fp16 M <= 8 dequantization (the codes go into the mma as
 * 1024 + q and the zero comes off once per group through the group's x
 * sums; default: q - z per pair before the mma). Both were measured no
 * faster than round 2 (kernels/WNA16_NOTES.md, round 3) and stay opt-in.
 * The STREAM path reads no_pdl and exact_dequant too, and stream_warps
 * (warps per block, 1..16; default: planned per shape), stream_prefetch
 * (chunks each warp asks L2 to prefetch ahead of its register batches;
 * default 0, none) and stream_dry (measurement only: stream the codes and
 * skip the arithmetic, fp16 4-bit M <= 8 static groups; y is garbage),
 * stream_nofold (1: fp16 M <= 8 multiplies q - z per pair as GEMV does;
 * default: the zero point and the fp16 offset come off once per group
 * through the group's x sums, round 3's fold), stream_no_xs (1: at M = 1
 * read x from global memory per k-step; default: staged once per block in
 * shared memory, permuted so that a chunk's x is one or two 16-byte loads).
 * ring, 1: AUTO takes the GEMV path (round 2) instead of STREAM and SLICE
 * at M <= 16. The SLICE path reads no_pdl and exact_dequant, and slice_tb,
 * slice_wpt, slice_ks (tiles per block, warps per tile, K slices; default
 * planned per shape; a forced value keeps the plan that has it);
 * slice_off, 1: AUTO does not take SLICE.
 * NULL restores the defaults. */
typedef struct {
    int ksplit_max, blocks_per_sm, stages_max, no_pdl, exact_dequant, meta_loads, refill_last_warp, zero_fold;
    int stream_warps, ring, stream_prefetch, stream_dry, stream_nofold, stream_no_xs;
    int slice_tb, slice_wpt, slice_ks, slice_off;
} wna16_gemv_tuning;
void wna16_gemv_tune(const wna16_gemv_tuning *t);

/* The SLICE path's split for w at M under the current tuning, once it has
 * run there (benchmarks): tiles per block, warps per tile, K slices; 0, or
 * -1 when it has not. */
int wna16_slice_plan_ran(const wna16_weight *w, int M, int *tb, int *wpt, int *ks);

/* W [N, K] (original channel order) dequantized into dst, in b->dt. */
int wna16_dequant(const wna16_weight *w, llmq_backend *b, void *dst);

/* on: keep a dense b->dt copy of W (N*K*2 bytes) for the DENSE path,
 * made now; off: free it. */
int wna16_cache_dense(wna16_weight *w, llmq_backend *b, int on);

/* Lend a device buffer of `bytes` (>= N*K*2 to be used) for the SCRATCH
 * path; NULL detaches. Under act-order the SLICE path also sorts x into it
 * from 9 rows (M * K * 2 bytes). Both write it in stream order, so handles
 * on one stream may share one; the caller keeps ownership and must not use
 * it for anything else while products are enqueued. */
void wna16_set_scratch(wna16_weight *w, void *scratch, size_t bytes);

/* Linears that read one x (q/k/v, gate/up) in one launch: up to this many. */
#define WNA16_GROUP_MAX 3

/* y[i] = x . W_i^T for n <= WNA16_GROUP_MAX weights in one STREAM launch
 * (one grid over all their channel tiles: one launch instead of n, and a
 * fuller grid than the smaller ones alone), where AUTO would take STREAM for
 * each and they share K, bits and groups (no act-order); or, for act-order
 * weights in one row order (q/k/v or gate/up of a GPTQ act-order
 * checkpoint) that AUTO sends to SLICE with x sorted into their shared
 * scratch (from 9 rows), with x sorted once for all of them. 0, -1 with
 * llmq_fail(), or 1 when not taken (nothing done: run each). */
int wna16_linear_group(wna16_weight *const *ws, int n, llmq_backend *b, void *const *ys, const void *x, int M);

/* src/model.h's linear seam: set lin->ctx = a prepared wna16_weight,
 * lin->forward = wna16_forward, lin->forward_group = wna16_forward_group,
 * lin->free_ctx = wna16_free_ctx. Both forwards add lin->bias when present. */
struct llmq_linear;
int wna16_forward(struct llmq_linear *lin, llmq_backend *b, void *y, const void *x, int rows);
int wna16_forward_group(struct llmq_linear *first, int n, llmq_backend *b, void *const *y, const void *x, int rows);
void wna16_free_ctx(struct llmq_linear *lin, llmq_backend *b);

#ifdef __cplusplus
}
#endif

#endif
