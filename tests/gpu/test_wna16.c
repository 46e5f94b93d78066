/* The W4A16 / W8A16 CUDA linears (kernels/wna16.h) against the C reference
 * (quant/wna16_ref.h) on GPTQ-layout tensors.
 *
 * Inputs come two ways: "random" (random qweight words, zero fields and
 * fp16 scales: every bit pattern, v1 zero fields of 15 included) and "rtn"
 * (a random Gaussian W quantized by quant/rtn.h and packed by quant/pack.h,
 * with act-order done as GPTQ does it: quantize the columns in a random
 * order, g_idx[P[i]] = i / G). x is random and rounded through dt first,
 * so the reference sees what the GPU sees; outputs are poisoned with NaN.
 *
 * Checks per case, by relative L2 ||gpu - ref|| / ||ref|| (NaN never
 * passes): the product through the path named (gemv, mma, dense, scratch,
 * auto),
 * < 2e-3 in fp16 and < 1e-2 in bf16 (the kernel rounds W to dt once,
 * the reference keeps it in fp32); "dequant" cases compare wna16_dequant
 * with the reference's W rounded through dt element by element (must be
 * identical). Then the llmq_linear seam (wna16_forward with a bias) and the
 * argument errors.
 *
 * Shapes: M in {1, 3, 8, 17, 128}; N, K in {64, 4096, 11008}, K = 172 at
 * 8 bits, K = 60 at 4 bits (a partly filled last word); bits 4/8; sym/asym; groups 32/64/128/-1;
 * act-order and static groups; GPTQ v1 and v2 zeros.
 *
 * Prints one line per case and "N passed, N failed"; exits 1 on a failure,
 * 77 without a GPU. No test framework (GPU machines lack cmocka).
 * "test_wna16 quick": fewer M on the 7B shapes; "test_wna16 small": the
 * small shapes only (fast enough under compute-sanitizer). */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/wna16.h"
#include "quant/pack.h"
#include "quant/qweight.h"
#include "quant/rtn.h"
#include "quant/wna16_ref.h"
#include "src/backend.h"
#include "src/dtype.h"
#include "src/error.h"
#include "src/model.h"

#define GT_PROG "test_wna16"
#define GT_SEED 0x7F4A7C159E3779B9ull
#include "tests/gpu/gpu_test.h"

static int n_pass, n_fail;

/* ---- random numbers (xorshift64*, Box-Muller) ---- */


static float nrand(void)
{
    double u1 = urand(), u2 = urand();
    return (float)(sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2));
}

/* ---- GPTQ tensors ---- */

typedef struct {
    int K, N, bits, G, ng, v2;
    int32_t *qweight, *qzeros, *g_idx;
    uint16_t *scales;
} gptq_t;

static void gptq_free(gptq_t *t)
{
    free(t->qweight);
    free(t->qzeros);
    free(t->g_idx);
    free(t->scales);
    memset(t, 0, sizeof *t);
}

/* Quantization order: identity, or a random permutation (act-order). */
static int *order(int K, int act)
{
    int *P = xmalloc((size_t)K * sizeof *P);
    for (int k = 0; k < K; k++)
        P[k] = k;
    for (int k = K - 1; act && k > 0; k--) {
        int j = (int)(urand32() % (uint32_t)(k + 1)), tmp = P[k];
        P[k] = P[j];
        P[j] = tmp;
    }
    return P;
}

static void gptq_alloc(gptq_t *t, int K, int N, int bits, int G, int v2)
{
    t->K = K;
    t->N = N;
    t->bits = bits;
    t->G = G;
    t->v2 = v2;
    t->ng = qweight_ngroups(K, G);
    t->qweight = xmalloc(gptq_qweight_rows(K, bits) * N * sizeof(int32_t));
    t->qzeros = xmalloc((size_t)t->ng * gptq_qzeros_cols(N, bits) * sizeof(int32_t));
    t->scales = xmalloc((size_t)t->ng * N * sizeof(uint16_t));
    t->g_idx = xmalloc((size_t)K * sizeof(int32_t));
}

static void make_random(gptq_t *t, int K, int N, int bits, int G, int sym, int act, int v2)
{
    gptq_alloc(t, K, N, bits, G, v2);
    const int pf = 32 / bits, gs = G < 0 ? K : G;
    for (size_t i = 0; i < gptq_qweight_rows(K, bits) * N; i++)
        t->qweight[i] = (int32_t)urand32();
    const uint32_t symf = (1u << (bits - 1)) - (v2 ? 0u : 1u); /* field of zero 2^(b-1) */
    for (int g = 0; g < t->ng; g++)
        for (int w = 0; w < N / pf; w++) {
            uint32_t word = 0;
            for (int j = 0; j < pf; j++)
                word |= (sym ? symf : urand32() & ((1u << bits) - 1)) << (bits * j);
            t->qzeros[(size_t)g * (N / pf) + w] = (int32_t)word;
        }
    for (size_t i = 0; i < (size_t)t->ng * N; i++)
        t->scales[i] = llmq_f32_to_f16((float)(0.002 + 0.018 * urand()));
    int *P = order(K, act);
    for (int i = 0; i < K; i++)
        t->g_idx[P[i]] = i / gs;
    free(P);
}

/* W [N, K] Gaussian, quantized by RTN in the order P (GPTQ's act-order
 * bookkeeping), packed as a checkpoint would be. */
static int make_rtn(gptq_t *t, int K, int N, int bits, int G, int sym, int act, int v2)
{
    float *W = xmalloc((size_t)N * K * sizeof *W), *Wp = xmalloc((size_t)N * K * sizeof *Wp);
    for (size_t i = 0; i < (size_t)N * K; i++)
        W[i] = 0.02f * nrand();
    int *P = order(K, act);
    for (int n = 0; n < N; n++)
        for (int i = 0; i < K; i++)
            Wp[(size_t)n * K + i] = W[(size_t)n * K + P[i]];
    llmq_qweight qp = {0}, qw = {0};
    int rc = rtn_quantize(Wp, N, K, bits, G, sym, 1, &qp);
    if (!rc)
        rc = qweight_alloc(&qw, N, K, bits, G, sym);
    if (!rc) {
        memcpy(qw.scales, qp.scales, (size_t)qp.ngroups * N * sizeof(float));
        memcpy(qw.zeros, qp.zeros, (size_t)qp.ngroups * N * sizeof(float));
        for (int n = 0; n < N; n++)
            for (int i = 0; i < K; i++)
                qw.q[(size_t)n * K + P[i]] = qp.q[(size_t)n * K + i];
        for (int i = 0; i < K; i++)
            qw.g_idx[P[i]] = qp.g_idx[i];
        gptq_alloc(t, K, N, bits, G, v2);
        rc = gptq_pack_qweight(&qw, t->qweight);
        if (!rc)
            rc = gptq_pack_qzeros(&qw, v2, t->qzeros);
        gptq_pack_scales(&qw, t->scales);
        memcpy(t->g_idx, qw.g_idx, (size_t)K * sizeof(int32_t));
    }
    qweight_free(&qp);
    qweight_free(&qw);
    free(P);
    free(W);
    free(Wp);
    return rc;
}

/* ---- device helpers ---- */

static void *dev_upload(llmq_backend *b, const float *h, size_t n)
{
    void *d = b->alloc(b, n * llmq_dtype_size(b->dt));
    if (!d || b->upload(b, d, b->dt, h, LLMQ_F32, n)) {
        fprintf(stderr, "upload: %s\n", llmq_last_error());
        exit(2);
    }
    return d;
}

static void poison(llmq_backend *b, void *d, size_t n)
{
    float *nan = xmalloc(n * sizeof *nan);
    for (size_t i = 0; i < n; i++)
        nan[i] = NAN;
    if (b->upload(b, d, b->dt, nan, LLMQ_F32, n)) {
        fprintf(stderr, "poison: %s\n", llmq_last_error());
        exit(2);
    }
    free(nan);
}

/* Relative L2 error; +inf when anything is not finite. */
static double rel_l2(const float *got, const float *ref, size_t n)
{
    double num = 0, den = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(got[i]))
            return INFINITY;
        double d = (double)got[i] - ref[i];
        num += d * d;
        den += (double)ref[i] * ref[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void report(int ok, const char *what, double err)
{
    printf("%s %s err=%.3g\n", ok ? "ok  " : "FAIL", what, err);
    fflush(stdout);
    ok ? n_pass++ : n_fail++;
}

static const char *path_name(int path)
{
    return path == WNA16_STREAM    ? "stream"
           : path == WNA16_SLICE   ? "slice"
           : path == WNA16_GEMV    ? "gemv"
           : path == WNA16_MMA     ? "mma"
           : path == WNA16_DENSE   ? "dense"
           : path == WNA16_SCRATCH ? "scratch"
                                   : "auto";
}

/* ---- one case ---- */

typedef struct {
    int rtn, M, K, N, bits, G, sym, act, v2;
} cfg;

static void run_case(llmq_backend *b, cfg c, const int *Ms, int nM, const int *paths, int npaths, int dequant)
{
    char desc[256];
    const char *dtn = llmq_dtype_name(b->dt);
    snprintf(desc, sizeof desc, "%s w%d g%d %s %s %s %s K=%d N=%d", dtn, c.bits, c.G, c.sym ? "sym" : "asym",
             c.act ? "act" : "static", c.v2 ? "v2" : "v1", c.rtn ? "rtn" : "random", c.K, c.N);
    gptq_t t = {0};
    if (c.rtn) {
        if (make_rtn(&t, c.K, c.N, c.bits, c.G, c.sym, c.act, c.v2)) {
            printf("FAIL %s: build: %s\n", desc, llmq_last_error());
            n_fail++;
            gptq_free(&t);
            return;
        }
    } else {
        make_random(&t, c.K, c.N, c.bits, c.G, c.sym, c.act, c.v2);
    }
    wna16_weight *w = NULL;
    if (wna16_prepare(&w, b, t.qweight, t.qzeros, t.scales, t.g_idx, c.K, c.N, c.bits, c.v2)) {
        printf("FAIL %s: prepare: %s\n", desc, llmq_last_error());
        n_fail++;
        gptq_free(&t);
        return;
    }
    const double tol = b->dt == LLMQ_F16 ? 2e-3 : 1e-2;
    const size_t NK = (size_t)c.N * c.K;
    void *scratch = NULL;
    for (int p = 0; p < npaths; p++) {
        if (paths[p] == WNA16_DENSE && wna16_cache_dense(w, b, 1)) {
            printf("FAIL %s: cache_dense: %s\n", desc, llmq_last_error());
            n_fail++;
        }
        if (paths[p] == WNA16_SCRATCH && !scratch) {
            scratch = b->alloc(b, NK * 2);
            if (!scratch) {
                fprintf(stderr, "alloc: %s\n", llmq_last_error());
                exit(2);
            }
            wna16_set_scratch(w, scratch, NK * 2);
        }
    }
    for (int mi = 0; mi < nM; mi++) {
        const int M = Ms[mi];
        float *x = xmalloc((size_t)M * c.K * sizeof *x), *yr = xmalloc((size_t)M * c.N * sizeof *yr),
              *yg = xmalloc((size_t)M * c.N * sizeof *yg);
        for (size_t i = 0; i < (size_t)M * c.K; i++)
            x[i] = nrand();
        llmq_round_through(x, (size_t)M * c.K, b->dt);
        if (wna16_gemm_ref(x, t.qweight, t.qzeros, t.scales, t.g_idx, M, c.K, c.N, c.bits, c.v2, yr)) {
            fprintf(stderr, "ref: %s\n", llmq_last_error());
            exit(2);
        }
        void *dx = dev_upload(b, x, (size_t)M * c.K), *dy = b->alloc(b, (size_t)M * c.N * llmq_dtype_size(b->dt));
        for (int p = 0; p < npaths; p++) {
            char what[320];
            snprintf(what, sizeof what, "%s M=%d %s", desc, M, path_name(paths[p]));
            poison(b, dy, (size_t)M * c.N);
            if (wna16_linear_path(w, b, dy, dx, M, paths[p]) || b->download_f32(b, yg, dy, b->dt, (size_t)M * c.N)) {
                printf("FAIL %s: %s\n", what, llmq_last_error());
                n_fail++;
                continue;
            }
            double err = rel_l2(yg, yr, (size_t)M * c.N);
            report(err < tol, what, err);
        }
        b->free(b, dx);
        b->free(b, dy);
        free(x);
        free(yr);
        free(yg);
    }
    if (dequant) {
        /* The repack, read back: must be the reference's W rounded to dt. */
        float *Wr = xmalloc(NK * sizeof *Wr), *Wg = xmalloc(NK * sizeof *Wg);
        void *dW = b->alloc(b, NK * 2);
        if (wna16_dequant_ref(t.qweight, t.qzeros, t.scales, t.g_idx, c.K, c.N, c.bits, c.v2, 0, c.N, Wr)) {
            fprintf(stderr, "ref: %s\n", llmq_last_error());
            exit(2);
        }
        llmq_round_through(Wr, NK, b->dt);
        poison(b, dW, NK);
        char what[300];
        snprintf(what, sizeof what, "%s dequant", desc);
        if (wna16_dequant(w, b, dW) || b->download_f32(b, Wg, dW, b->dt, NK)) {
            printf("FAIL %s: %s\n", what, llmq_last_error());
            n_fail++;
        } else {
            size_t bad = 0;
            for (size_t i = 0; i < NK; i++)
                bad += !(Wg[i] == Wr[i]);
            report(bad == 0, what, (double)bad);
        }
        b->free(b, dW);
        free(Wr);
        free(Wg);
    }
    if (scratch)
        b->free(b, scratch);
    wna16_free(w);
    gptq_free(&t);
}

/* ---- the llmq_linear seam and argument errors ---- */

static void check_forward(llmq_backend *b)
{
    const int M = 5, K = 256, N = 96;
    gptq_t t = {0};
    make_random(&t, K, N, 4, 64, 0, 1, 1);
    wna16_weight *w = NULL;
    if (wna16_prepare(&w, b, t.qweight, t.qzeros, t.scales, t.g_idx, K, N, 4, 1)) {
        printf("FAIL forward: prepare: %s\n", llmq_last_error());
        n_fail++;
        gptq_free(&t);
        return;
    }
    float *x = xmalloc((size_t)M * K * sizeof *x), *bias = xmalloc(N * sizeof *bias);
    float *yr = xmalloc((size_t)M * N * sizeof *yr), *yg = xmalloc((size_t)M * N * sizeof *yg);
    for (int i = 0; i < M * K; i++)
        x[i] = nrand();
    for (int i = 0; i < N; i++)
        bias[i] = nrand();
    llmq_round_through(x, (size_t)M * K, b->dt);
    llmq_round_through(bias, N, b->dt);
    wna16_gemm_ref(x, t.qweight, t.qzeros, t.scales, t.g_idx, M, K, N, 4, 1, yr);
    for (int m = 0; m < M; m++)
        for (int n = 0; n < N; n++)
            yr[m * N + n] += bias[n];
    void *dx = dev_upload(b, x, (size_t)M * K), *db = dev_upload(b, bias, N);
    void *dy = b->alloc(b, (size_t)M * N * 2);
    poison(b, dy, (size_t)M * N);
    llmq_linear lin = {.in = K, .out = N, .bias = db, .forward = wna16_forward, .ctx = w, .free_ctx = wna16_free_ctx};
    int rc = lin.forward(&lin, b, dy, dx, M);
    if (!rc)
        rc = b->download_f32(b, yg, dy, b->dt, (size_t)M * N);
    double err = rc ? INFINITY : rel_l2(yg, yr, (size_t)M * N);
    report(!rc && err < 2e-3, "forward (llmq_linear seam, bias) f16 M=5 K=256 N=96", err);
    lin.free_ctx(&lin, b);
    report(lin.ctx == NULL, "forward free_ctx", 0);
    b->free(b, dx);
    b->free(b, db);
    b->free(b, dy);
    free(x);
    free(bias);
    free(yr);
    free(yg);
    gptq_free(&t);
}

/* Linears that read one x in one launch (wna16_forward_group, q/k/v and
 * gate/up): each output against the reference with its own weight (bias on
 * the last one), taken where AUTO would stream each (M = 1, no act-order,
 * the same K, bits and groups) and declined (1, nothing written) otherwise.
 * act: 0 none, 1 the last weight act-order (its own order), 2 all of them
 * in one order with one scratch attached, as a GPTQ act-order checkpoint's
 * q/k/v in the runner: taken from SORT_MIN_M rows (x sorted once); 3 as 2
 * but the last weight in an order of its own: declined at any M (x sorted
 * once would be in the wrong order for it). */
static void check_group(llmq_backend *b, int n, int K, const int *N, int bits, int G, int act, int M, int expect)
{
    char desc[200];
    snprintf(desc, sizeof desc, "group %s n=%d K=%d N=%d,%d,%d w%d g%d %s M=%d", llmq_dtype_name(b->dt), n, K, N[0],
             n > 1 ? N[1] : 0, n > 2 ? N[2] : 0, bits, G,
             act == 3 ? "act (last in another order)" : act == 2 ? "act (one order)" : act ? "act" : "static", M);
    gptq_t t[3] = {{0}};
    llmq_linear lin[3] = {{0}};
    void *dy[3] = {NULL, NULL, NULL}, *db = NULL;
    float *x = xmalloc((size_t)M * K * sizeof *x), *bias = xmalloc((size_t)N[n - 1] * sizeof *bias);
    for (int i = 0; i < M * K; i++)
        x[i] = nrand();
    for (int i = 0; i < N[n - 1]; i++)
        bias[i] = nrand();
    llmq_round_through(x, (size_t)M * K, b->dt);
    llmq_round_through(bias, N[n - 1], b->dt);
    void *dx = dev_upload(b, x, (size_t)M * K);
    db = dev_upload(b, bias, N[n - 1]);
    int ok = 1;
    size_t scratch_bytes = 0;
    for (int i = 0; i < n; i++)
        scratch_bytes = (size_t)N[i] * K * 2 > scratch_bytes ? (size_t)N[i] * K * 2 : scratch_bytes;
    void *scratch = act >= 2 ? b->alloc(b, scratch_bytes) : NULL;
    for (int i = 0; i < n; i++) {
        make_random(&t[i], K, N[i], bits, G, i & 1, act >= 2 || (act && i == n - 1), 1);
        if (act >= 2 && i > 0 && !(act == 3 && i == n - 1))
            memcpy(t[i].g_idx, t[0].g_idx, (size_t)K * sizeof *t[i].g_idx);
        wna16_weight *w = NULL;
        if (wna16_prepare(&w, b, t[i].qweight, t[i].qzeros, t[i].scales, t[i].g_idx, K, N[i], bits, 1)) {
            printf("FAIL %s: prepare: %s\n", desc, llmq_last_error());
            n_fail++;
            ok = 0;
            break;
        }
        if (scratch)
            wna16_set_scratch(w, scratch, scratch_bytes);
        lin[i] = (llmq_linear){.in = K, .out = N[i], .bias = i == n - 1 ? db : NULL, .forward = wna16_forward,
                               .forward_group = wna16_forward_group, .ctx = w, .free_ctx = wna16_free_ctx};
        dy[i] = b->alloc(b, (size_t)M * N[i] * 2);
        poison(b, dy[i], (size_t)M * N[i]);
    }
    if (ok) {
        int rc = wna16_forward_group(lin, n, b, dy, dx, M);
        char what[300];
        snprintf(what, sizeof what, "%s: %s", desc, expect ? "taken" : "declined");
        report(rc == (expect ? 0 : 1), what, rc);
        for (int i = 0; i < n && rc == 0; i++) {
            float *yr = xmalloc((size_t)M * N[i] * sizeof *yr), *yg = xmalloc((size_t)M * N[i] * sizeof *yg);
            wna16_gemm_ref(x, t[i].qweight, t[i].qzeros, t[i].scales, t[i].g_idx, M, K, N[i], bits, 1, yr);
            if (lin[i].bias)
                for (int m = 0; m < M; m++)
                    for (int c = 0; c < N[i]; c++)
                        yr[(size_t)m * N[i] + c] += bias[c];
            double err = b->download_f32(b, yg, dy[i], b->dt, (size_t)M * N[i]) ? INFINITY
                                                                                 : rel_l2(yg, yr, (size_t)M * N[i]);
            snprintf(what, sizeof what, "%s: output %d", desc, i);
            report(err < (b->dt == LLMQ_F16 ? 2e-3 : 1e-2), what, err);
            free(yr);
            free(yg);
        }
    }
    for (int i = 0; i < n; i++) {
        if (lin[i].free_ctx)
            lin[i].free_ctx(&lin[i], b);
        if (dy[i])
            b->free(b, dy[i]);
        gptq_free(&t[i]);
    }
    b->free(b, dx);
    b->free(b, db);
    if (scratch)
        b->free(b, scratch);
    free(x);
    free(bias);
}

/* K not a multiple of 32/bits (wna16.h: ceil-sized arrays, the last word
 * of each column partly filled), here K = 60 at 4 bits: codes packed with
 * quant/pack.h's pack_bits as kernels/qlinear_cuda.cu does. The reference
 * needs whole words, so it sees the same words as K = 64 with x's columns
 * 60..63 zero (the 4 codes past K are 0 and in the last group). */
static void check_partial_word(llmq_backend *b, int G, int act)
{
    enum { K = 60, KP = 64, N = 64, BITS = 4 };
    const int gs = G < 0 ? K : G, ng = (K + gs - 1) / gs;
    const int qrows = (K * BITS + 31) / 32, zcols = (N * BITS + 31) / 32;
    int32_t *qweight = xmalloc((size_t)qrows * N * sizeof(int32_t)), *qzeros = xmalloc((size_t)ng * zcols * 4);
    uint16_t *scales = xmalloc((size_t)ng * N * sizeof(uint16_t));
    int32_t *g_idx = xmalloc(KP * sizeof(int32_t));
    uint8_t codes[KP];
    for (int n = 0; n < N; n++) {
        for (int k = 0; k < K; k++)
            codes[k] = (uint8_t)(urand32() & 15u);
        pack_bits(codes, K, BITS, (uint32_t *)qweight + n, N);
    }
    for (int g = 0; g < ng; g++) {
        for (int n = 0; n < N; n++)
            codes[n] = (uint8_t)(urand32() & 15u);
        pack_bits(codes, N, BITS, (uint32_t *)qzeros + (size_t)g * zcols, 1);
    }
    for (int i = 0; i < ng * N; i++)
        scales[i] = llmq_f32_to_f16((float)(0.002 + 0.018 * urand()));
    int *P = order(K, act);
    for (int i = 0; i < K; i++)
        g_idx[P[i]] = i / gs;
    free(P);
    for (int k = K; k < KP; k++)
        g_idx[k] = ng - 1;
    char desc[128];
    snprintf(desc, sizeof desc, "partial word: f16 w4 g%d %s K=60 N=64", G, act ? "act" : "static");
    wna16_weight *w = NULL;
    if (wna16_prepare(&w, b, qweight, qzeros, scales, g_idx, K, N, BITS, 1)) {
        printf("FAIL %s: prepare: %s\n", desc, llmq_last_error());
        n_fail++;
    } else {
        static const int Ms[] = {1, 3, 17}, paths[] = {WNA16_GEMV, WNA16_MMA, WNA16_AUTO};
        for (int mi = 0; mi < 3; mi++) {
            const int M = Ms[mi];
            float *x = xmalloc((size_t)M * KP * sizeof *x), *yr = xmalloc((size_t)M * N * sizeof *yr),
                  *yg = xmalloc((size_t)M * N * sizeof *yg);
            for (int m = 0; m < M; m++)
                for (int k = 0; k < KP; k++)
                    x[(size_t)m * KP + k] = k < K ? nrand() : 0.0f;
            llmq_round_through(x, (size_t)M * KP, b->dt);
            if (wna16_gemm_ref(x, qweight, qzeros, scales, g_idx, M, KP, N, BITS, 1, yr)) {
                fprintf(stderr, "ref: %s\n", llmq_last_error());
                exit(2);
            }
            for (int m = 0; m < M; m++) /* x [M, 60] for the GPU */
                memmove(x + (size_t)m * K, x + (size_t)m * KP, K * sizeof *x);
            void *dx = dev_upload(b, x, (size_t)M * K), *dy = b->alloc(b, (size_t)M * N * llmq_dtype_size(b->dt));
            for (int p = 0; p < 3; p++) {
                char what[200];
                snprintf(what, sizeof what, "%s M=%d %s", desc, M, path_name(paths[p]));
                poison(b, dy, (size_t)M * N);
                if (wna16_linear_path(w, b, dy, dx, M, paths[p]) || b->download_f32(b, yg, dy, b->dt, (size_t)M * N)) {
                    printf("FAIL %s: %s\n", what, llmq_last_error());
                    n_fail++;
                    continue;
                }
                const double err = rel_l2(yg, yr, (size_t)M * N);
                report(err < 2e-3, what, err);
            }
            b->free(b, dx);
            b->free(b, dy);
            free(x);
            free(yr);
            free(yg);
        }
        wna16_free(w);
    }
    free(qweight);
    free(qzeros);
    free(scales);
    free(g_idx);
}

static void check_errors(llmq_backend *b)
{
    gptq_t t = {0};
    make_random(&t, 64, 64, 4, 32, 1, 0, 0);
    wna16_weight *w = NULL;
    report(wna16_prepare(&w, b, t.qweight, t.qzeros, t.scales, t.g_idx, 64, 64, 3, 0) != 0 && !w,
           "error: bits 3 refused", 0);
    t.g_idx[5] = -1;
    report(wna16_prepare(&w, b, t.qweight, t.qzeros, t.scales, t.g_idx, 64, 64, 4, 0) != 0 && !w,
           "error: negative g_idx refused", 0);
    t.g_idx[5] = 0;
    if (wna16_prepare(&w, b, t.qweight, t.qzeros, t.scales, t.g_idx, 64, 64, 4, 0)) {
        printf("FAIL error checks: prepare: %s\n", llmq_last_error());
        n_fail++;
    } else {
        report(wna16_linear_path(w, b, NULL, NULL, 4, WNA16_DENSE) != 0, "error: dense path without a copy", 0);
        report(wna16_linear_path(w, b, NULL, NULL, 4, WNA16_SCRATCH) != 0, "error: scratch path without one", 0);
        report(wna16_linear(w, b, NULL, NULL, 0) == 0, "M = 0 is a no-op", 0);
        report(wna16_linear_path(w, b, NULL, NULL, 4, 99) != 0, "error: unknown path", 0);
        report(wna16_linear_path(w, b, NULL, NULL, 4, WNA16_SLICE) != 0, "error: slice path refuses a one-chunk K", 0);
        llmq_backend *f32 = NULL;
        if (llmq_backend_cuda(&f32, 0, LLMQ_F32) == 0) {
            report(wna16_linear(w, f32, NULL, NULL, 4) != 0, "error: F32 backend refused", 0);
            f32->destroy(f32);
        }
        llmq_backend *cpu = NULL;
        if (llmq_backend_cpu(&cpu) == 0) {
            report(wna16_linear(w, cpu, NULL, NULL, 4) != 0, "error: CPU backend refused", 0);
            cpu->destroy(cpu);
        }
        wna16_free(w);
    }
    gptq_free(&t);
}

int main(int argc, char **argv)
{
    const int quick = argc > 1 && strcmp(argv[1], "quick") == 0;
    const int small = argc > 1 && strcmp(argv[1], "small") == 0;
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77; /* meson's "skipped" */
    }
    llmq_backend *f16 = NULL, *bf16 = NULL;
    if (llmq_backend_cuda(&f16, 0, LLMQ_F16) || llmq_backend_cuda(&bf16, 0, LLMQ_BF16)) {
        fprintf(stderr, "test_wna16: %s\n", llmq_last_error());
        return 1;
    }
    static const int Ms[] = {1, 3, 8, 17, 128};
    static const int mma[] = {WNA16_STREAM, WNA16_GEMV, WNA16_MMA},
                     all3[] = {WNA16_STREAM, WNA16_GEMV, WNA16_MMA, WNA16_DENSE, WNA16_SCRATCH};
    static const int autop[] = {WNA16_AUTO};
    static const int groups[] = {32, 64, 128, -1};

    /* Small shapes: every combination, every M, both input kinds. */
    int idx = 0;
    for (int bits = 4; bits <= 8; bits += 4)
        for (int ki = 0; ki < (bits == 8 ? 2 : 1); ki++)
            for (int gi = 0; gi < 4; gi++)
                for (int sym = 1; sym >= 0; sym--)
                    for (int act = 0; act <= 1; act++, idx++) {
                        const int rtn = idx & 1;
                        /* rtn asym needs v2 where a zero is 0; random zeros suit both. */
                        const int v2 = (rtn && !sym) ? 1 : (idx >> 1) & 1;
                        cfg c = {rtn, 0, ki ? 172 : 64, 64, bits, groups[gi], sym, act, v2};
                        run_case(f16, c, Ms, 5, mma, 3, idx % 4 == 0);
                    }
    /* The GEMV kernel's other code paths, under several tunings (default;
     * a one-stage ring refilled per stage; one K slice, no cluster, no PDL;
     * the deepest split; a 3-slice cluster with W rounded before the mma;
     * scales by ordinary loads with a deep ring; round 1's configuration;
     * all of these with round 3's opt-in refill by the last warp out and
     * zero folded into the group sums; then the defaults (round 2's block
     * barrier and per-pair zero); a 4-stage ring refilled by the last warp;
     * a 2-slice cluster with the barrier and the fold):
     * a short last tile group (N = 200, 40, 52: not multiples of 64), K not
     * a multiple of the chunk (1000, 172), M across the 8- and 16-row tiles. */
    static const wna16_gemv_tuning tunes[] = {
        {.refill_last_warp = 1, .zero_fold = 1},
        {.stages_max = 1, .refill_last_warp = 1, .zero_fold = 1},
        {.ksplit_max = 1, .no_pdl = 1, .refill_last_warp = 1, .zero_fold = 1},
        {.ksplit_max = 8, .blocks_per_sm = 64, .stages_max = 1, .refill_last_warp = 1, .zero_fold = 1},
        {.ksplit_max = 3, .stages_max = 2, .no_pdl = 1, .exact_dequant = 1, .refill_last_warp = 1, .zero_fold = 1},
        {.stages_max = 8, .meta_loads = 1, .refill_last_warp = 1, .zero_fold = 1},
        {.stages_max = 8, .exact_dequant = 1, .meta_loads = 1, .refill_last_warp = 1, .zero_fold = 1},
        {0},
        {.stages_max = 4, .refill_last_warp = 1, .zero_fold = 1},
        {.ksplit_max = 2, .stages_max = 3, .zero_fold = 1},
    };
    static const int gemv_only[] = {WNA16_GEMV};
    for (int ti = 0; ti < (int)(sizeof tunes / sizeof tunes[0]); ti++) {
        const wna16_gemv_tuning *tu = &tunes[ti];
        printf("-- gemv tuning: ksplit_max %d, blocks_per_sm %d, stages_max %d, no_pdl %d, exact_dequant %d, "
               "meta_loads %d, refill_last_warp %d, zero_fold %d\n",
               tu->ksplit_max, tu->blocks_per_sm, tu->stages_max, tu->no_pdl, tu->exact_dequant, tu->meta_loads,
               tu->refill_last_warp, tu->zero_fold);
        wna16_gemv_tune(tu);
        run_case(f16, (cfg){0, 0, 1000, 200, 4, 128, 1, 0, 0}, (const int[]){1, 9, 16, 33}, 4, gemv_only, 1, 0);
        run_case(f16, (cfg){1, 0, 512, 40, 4, 64, 0, 1, 1}, (const int[]){1, 5}, 2, gemv_only, 1, 0);
        run_case(f16, (cfg){0, 0, 172, 52, 8, 32, 0, 1, 0}, (const int[]){2, 16}, 2, gemv_only, 1, 0);
        if (!small) {
            run_case(bf16, (cfg){0, 0, 4096, 200, 4, 32, 0, 1, 1}, (const int[]){1, 12}, 2, gemv_only, 1, 0);
            run_case(f16, (cfg){0, 0, 4096, 4096, 8, 128, 1, 0, 0}, (const int[]){1, 16}, 2, gemv_only, 1, 0);
            run_case(f16, (cfg){1, 0, 4096, 11008, 4, 128, 1, 1, 0}, (const int[]){1}, 1, gemv_only, 1, 0);
        }
    }
    wna16_gemv_tune(NULL);
    /* The stream kernel's other plans: one warp per tile (each warp the
     * whole of K: many groups staged per warp), 3 warps with W rounded
     * before the mma, the largest block without PDL and with L2 prefetch,
     * 2 warps prefetching their whole run, q - z per pair instead of the
     * fold, x from global memory at M = 1; same cases. */
    static const wna16_gemv_tuning stunes[] = {
        {.stream_warps = 1},
        {.stream_warps = 3, .exact_dequant = 1},
        {.stream_warps = 16, .no_pdl = 1, .stream_prefetch = 8},
        {.stream_warps = 2, .stream_prefetch = 1024},
        {.stream_nofold = 1},
        {.stream_no_xs = 1}};
    static const int stream_only[] = {WNA16_STREAM};
    for (int ti = 0; ti < (int)(sizeof stunes / sizeof stunes[0]); ti++) {
        const wna16_gemv_tuning *tu = &stunes[ti];
        printf("-- stream tuning: warps %d, exact_dequant %d, no_pdl %d, prefetch %d, nofold %d, no_xs %d\n",
               tu->stream_warps, tu->exact_dequant, tu->no_pdl, tu->stream_prefetch, tu->stream_nofold,
               tu->stream_no_xs);
        wna16_gemv_tune(tu);
        run_case(f16, (cfg){0, 0, 1000, 200, 4, 128, 1, 0, 0}, (const int[]){1, 9, 16, 33}, 4, stream_only, 1, 0);
        run_case(f16, (cfg){1, 0, 512, 40, 4, 64, 0, 1, 1}, (const int[]){1, 5}, 2, stream_only, 1, 0);
        run_case(f16, (cfg){0, 0, 172, 52, 8, 32, 0, 1, 0}, (const int[]){2, 16}, 2, stream_only, 1, 0);
        run_case(f16, (cfg){1, 0, 4096, 64, 4, 32, 0, 0, 1}, (const int[]){1, 8}, 2, stream_only, 1, 0);
        /* the three static-group batch layouts: 1, 2, 4 chunks per group */
        run_case(f16, (cfg){1, 0, 2048, 96, 4, 64, 0, 0, 1}, (const int[]){1, 3}, 2, stream_only, 1, 0);
        run_case(f16, (cfg){0, 0, 1024, 80, 8, 64, 1, 0, 0}, (const int[]){1, 7}, 2, stream_only, 1, 0);
        run_case(f16, (cfg){0, 0, 1536, 48, 8, 128, 0, 0, 1}, (const int[]){1, 12}, 2, stream_only, 1, 0);
        /* one group (flushed every 4 chunks), and groups of 8 chunks */
        run_case(f16, (cfg){1, 0, 4096, 200, 8, -1, 1, 0, 0}, (const int[]){1, 5}, 2, stream_only, 1, 0);
        run_case(f16, (cfg){0, 0, 2048, 64, 4, 512, 0, 0, 1}, (const int[]){1, 3}, 2, stream_only, 1, 0);
        if (!small) {
            run_case(bf16, (cfg){0, 0, 4096, 200, 4, 32, 0, 1, 1}, (const int[]){1, 12}, 2, stream_only, 1, 0);
            run_case(f16, (cfg){0, 0, 11008, 4096, 4, 128, 1, 0, 0}, (const int[]){1, 16}, 2, stream_only, 1, 0);
        }
    }
    wna16_gemv_tune(NULL);
    /* The slice kernel (static groups of whole chunks): its planned split
     * and forced ones (one tile of one warp over all of K; 16 tiles of one
     * warp in 8 K slices; 2 tiles of 4 warps in 2 slices; W rounded before
     * the mma, without PDL), 8-row and 16-row tiles, further row blocks
     * (M = 17-64), N not a multiple of the block's tiles, K with a short
     * last slice (11008 = 172 chunks), every flush unit (1, 2, 4 chunks;
     * one group; groups of 8 chunks), bf16, act-order. (4-bit groups of 32
     * are half a chunk: not the slice kernel's; check_errors.) */
    static const wna16_gemv_tuning ltunes[] = {
        {0}, {.slice_tb = 1, .slice_wpt = 1, .slice_ks = 1}, {.slice_tb = 16, .slice_wpt = 1, .slice_ks = 8},
        {.slice_tb = 2, .slice_wpt = 4, .slice_ks = 2}, {.exact_dequant = 1, .no_pdl = 1}};
    static const int slice_only[] = {WNA16_SLICE}, slice_scratch[] = {WNA16_SLICE, WNA16_SCRATCH};
    for (int ti = 0; ti < (int)(sizeof ltunes / sizeof ltunes[0]); ti++) {
        const wna16_gemv_tuning *tu = &ltunes[ti];
        printf("-- slice tuning: tiles %d, warps per tile %d, K slices %d, exact_dequant %d, no_pdl %d\n",
               tu->slice_tb, tu->slice_wpt, tu->slice_ks, tu->exact_dequant, tu->no_pdl);
        wna16_gemv_tune(tu);
        run_case(f16, (cfg){0, 0, 1024, 200, 4, 128, 1, 0, 0}, (const int[]){1, 2, 3, 8, 9, 16, 17, 32, 33, 64}, 10,
                 slice_only, 1, 0);
        run_case(f16, (cfg){1, 0, 256, 40, 8, 32, 0, 0, 1}, (const int[]){3, 16}, 2, slice_only, 1, 0);
        run_case(f16, (cfg){1, 0, 2048, 96, 4, 64, 0, 0, 1}, (const int[]){5, 12}, 2, slice_only, 1, 0);
        run_case(f16, (cfg){0, 0, 1024, 80, 8, 64, 1, 0, 0}, (const int[]){4, 16, 20}, 3, slice_only, 1, 0);
        run_case(f16, (cfg){0, 0, 1536, 48, 8, 128, 0, 0, 1}, (const int[]){7, 13}, 2, slice_only, 1, 0);
        run_case(f16, (cfg){1, 0, 4096, 200, 8, -1, 1, 0, 0}, (const int[]){2, 16}, 2, slice_only, 1, 0);
        run_case(f16, (cfg){0, 0, 2048, 64, 4, 512, 0, 0, 1}, (const int[]){6, 11, 27}, 3, slice_only, 1, 0);
        run_case(bf16, (cfg){0, 0, 2048, 200, 4, 64, 0, 0, 1}, (const int[]){3, 16, 40}, 3, slice_only, 1, 0);
        run_case(bf16, (cfg){1, 0, 1024, 72, 8, 32, 1, 0, 0}, (const int[]){9}, 1, slice_only, 1, 0);
        /* act-order: x gathered through the repack's row order at staging,
         * or (a scratch attached) sorted into the scratch first */
        run_case(f16, (cfg){0, 0, 1024, 200, 4, 128, 0, 1, 0}, (const int[]){1, 4, 16, 33}, 4, slice_only, 1, 0);
        run_case(f16, (cfg){0, 0, 1024, 200, 4, 128, 0, 1, 0}, (const int[]){1, 16, 64}, 3, slice_scratch, 2, 0);
        run_case(f16, (cfg){1, 0, 2048, 96, 4, 64, 1, 1, 1}, (const int[]){2, 16}, 2, slice_only, 1, 0);
        run_case(bf16, (cfg){0, 0, 1024, 40, 8, 32, 0, 1, 0}, (const int[]){3, 17}, 2, slice_only, 1, 0);
        run_case(bf16, (cfg){0, 0, 1024, 40, 8, 32, 0, 1, 0}, (const int[]){3, 17}, 2, slice_scratch, 2, 0);
        if (!small) {
            run_case(f16, (cfg){0, 0, 11008, 4096, 4, 128, 1, 0, 0}, (const int[]){4, 16}, 2, slice_only, 1, 0);
            run_case(f16, (cfg){1, 0, 4096, 11008, 4, 128, 0, 0, 1}, (const int[]){16, 32}, 2, slice_only, 1, 0);
            run_case(f16, (cfg){1, 0, 11008, 4096, 4, 128, 0, 1, 0}, (const int[]){1, 16}, 2, slice_scratch, 2, 0);
        }
    }
    wna16_gemv_tune(NULL);
    if (small)
        goto seams;
    /* One thin and one deep extreme. */
    run_case(f16, (cfg){0, 0, 64, 11008, 4, 32, 0, 1, 1}, (const int[]){1, 8, 17}, 3, mma, 3, 1);
    run_case(f16, (cfg){0, 0, 11008, 64, 8, 128, 1, 1, 0}, (const int[]){1, 17}, 2, mma, 3, 1);
    /* Groups of 16 over K = 8192, act-order: 64 groups per K slice of the
     * GEMV kernel (AUTO takes it while the slice's scales fit its shared
     * memory, else the MMA kernel). */
    run_case(f16, (cfg){0, 0, 8192, 64, 4, 16, 0, 1, 1}, (const int[]){1, 5}, 2, autop, 1, 0);

    /* 7B shapes, fp16. */
    static const int shapes[][2] = {{4096, 4096}, {4096, 11008}, {11008, 4096}}; /* K, N */
    for (int s = 0; s < 3; s++) {
        const int K = shapes[s][0], N = shapes[s][1];
        run_case(f16, (cfg){s == 0, 0, K, N, 4, 128, 1, 1, 0}, Ms, quick ? 2 : 5, s == 0 ? all3 : mma, s == 0 ? 5 : 3,
                 s == 0);
        run_case(f16, (cfg){0, 0, K, N, 8, -1, 1, 0, 0}, Ms, quick ? 2 : 5, s == 2 ? all3 : mma, s == 2 ? 5 : 3, 0);
        if (!quick)
            run_case(f16, (cfg){s != 0, 0, K, N, 4, 128, 0, 0, 1}, (const int[]){1, 17}, 2, mma, 3, 0);
    }
    if (!quick)
        run_case(f16, (cfg){0, 0, 11008, 11008, 4, 128, 1, 1, 0}, (const int[]){3}, 1, mma, 3, 0);

    /* bf16 */
    run_case(bf16, (cfg){1, 0, 64, 64, 4, 32, 0, 1, 1}, Ms, 5, mma, 3, 1);
    run_case(bf16, (cfg){0, 0, 172, 64, 8, 32, 0, 0, 0}, Ms, 5, mma, 3, 1);
    run_case(bf16, (cfg){0, 0, 4096, 11008, 4, 128, 1, 1, 0}, (const int[]){1, 17, 128}, 3, all3, 5, 0);
    run_case(bf16, (cfg){1, 0, 4096, 4096, 8, 128, 0, 1, 1}, (const int[]){3, 8}, 2, mma, 3, 1);

seams:
    check_forward(f16);
    /* q/k/v (GQA: k, v narrower), a wide and a narrow linear, a small odd
     * group; bf16 and 8 bits; declined: M = 4 (AUTO takes the ring there),
     * act-order, gate/up of 7B (each fills the GPU alone). */
    check_group(f16, 3, 4096, (const int[]){4096, 1024, 1024}, 4, 128, 0, 1, 1);
    check_group(f16, 2, 4096, (const int[]){11008, 512}, 4, 128, 0, 1, 1);
    check_group(f16, 3, 256, (const int[]){96, 40, 200}, 4, 64, 0, 1, 1);
    check_group(bf16, 3, 1024, (const int[]){512, 128, 128}, 8, -1, 0, 1, 1);
    check_group(f16, 2, 1000, (const int[]){200, 56}, 4, 128, 0, 1, 1);
    check_group(f16, 3, 256, (const int[]){96, 40, 200}, 4, 64, 0, 4, 0);
    check_group(f16, 2, 256, (const int[]){96, 40}, 4, 64, 1, 1, 0);
    check_group(f16, 2, 4096, (const int[]){11008, 11008}, 4, 128, 0, 1, 0); /* each fills the GPU */
    /* act-order q/k/v and gate/up in one order: x sorted once from 9 rows;
     * declined below 9 rows, and where one weight has an order of its own */
    check_group(f16, 3, 4096, (const int[]){4096, 1024, 1024}, 4, 128, 2, 16, 1);
    check_group(f16, 2, 1024, (const int[]){2816, 2816}, 4, 128, 2, 9, 1);
    check_group(bf16, 3, 1024, (const int[]){512, 128, 128}, 8, 128, 2, 40, 1);
    check_group(f16, 3, 4096, (const int[]){4096, 1024, 1024}, 4, 128, 2, 4, 0);
    check_group(f16, 3, 4096, (const int[]){4096, 1024, 1024}, 4, 128, 3, 16, 0);
    check_group(bf16, 2, 1024, (const int[]){2816, 2816}, 4, 128, 3, 40, 0);
    check_partial_word(f16, 32, 0);
    check_partial_word(f16, -1, 1);
    check_errors(f16);

    bf16->destroy(bf16);
    f16->destroy(f16);
    printf("%d passed, %d failed\n", n_pass, n_fail);
    return n_fail ? 1 : 0;
}
