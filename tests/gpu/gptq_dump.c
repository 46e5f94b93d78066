/* Dump GPTQ test cases for tests/gpu/gptq_reference.py.
 *
 * Builds a few realistic problems (random W; H = 2/T X^T X from correlated
 * activations with outlier channels and one dead channel), runs llmq's
 * solver on each for several configurations, and writes, under DIR:
 *
 *   manifest.json                   shapes, configurations, file names
 *   <case>/W.bin, <case>/H.bin      inputs: raw little-endian float32
 *   <case>/<config>.q.bin           codes, uint8 [out, in]
 *   <case>/<config>.scales.bin      float32 [ngroups, out]
 *   <case>/<config>.zeros.bin       float32 [ngroups, out]
 *   <case>/<config>.g_idx.bin       int32 [in]
 *
 * Build (repository root):
 *   gcc -std=c11 -D_GNU_SOURCE -O2 -I. tests/gpu/gptq_dump.c gptq/gptq.c gptq/hinv.c \
 *       quant/rtn.c quant/qweight.c src/error.c src/dtype.c -o gptq_dump \
 *       -lopenblas -llapacke -lm -lpthread
 * Run:  ./gptq_dump DIR && python3 tests/gpu/gptq_reference.py DIR */
#include <cblas.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "gptq/gptq.h"
#include "src/error.h"
#include "src/fileio.h"

/* ---- deterministic random numbers ---- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ULL;

static double urand(void) /* (0, 1) */
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return ((double)(g_rng >> 11) + 0.5) / 9007199254740992.0;
}

static float grand(void) /* standard normal, Box-Muller */
{
    return (float)(sqrt(-2.0 * log(urand())) * cos(6.283185307179586 * urand()));
}

/* ---- files ---- */

static int write_file(const char *dir, const char *name, const void *p, size_t bytes)
{
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (!f)
        return llmq_fail("%s: %s", path, strerror(errno));
    size_t w = fwrite(p, 1, bytes, f);
    if (fclose(f) != 0 || w != bytes)
        return llmq_fail("%s: write failed", path);
    return 0;
}

static int make_dir(const char *path)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST)
        return llmq_fail("%s: %s", path, strerror(errno));
    return 0;
}

/* ---- the problems ---- */

typedef struct {
    const char *name;
    int out, in, tokens, rank;
    const char *from; /* "DUMPDIR/PREFIX": W and H written by llmq-gptq --dump */
} problem;

/* A raw float32 file of exactly n values. */
static float *read_f32(const char *path, size_t n)
{
    char *data;
    size_t len;
    if (llmq_read_file(path, &data, &len))
        return NULL;
    if (len != n * sizeof(float)) {
        llmq_fail("%s: %zu bytes, expected %zu", path, len, n * sizeof(float));
        free(data);
        return NULL;
    }
    return (float *)data;
}

typedef struct {
    const char *name;
    int bits, group, sym, act_order, static_groups;
} config;

/* H = 2/T X^T X with X = Z A / sqrt(rank) + 0.1 noise (correlated channels),
 * every 37th channel an outlier (x20), channel 5 never active (dead). */
static float *make_hessian(int K, int T, int rank)
{
    float *Z = malloc((size_t)T * rank * sizeof(float));
    float *A = malloc((size_t)rank * K * sizeof(float));
    float *X = malloc((size_t)T * K * sizeof(float));
    float *H = malloc((size_t)K * K * sizeof(float));
    if (!Z || !A || !X || !H) {
        free(Z), free(A), free(X), free(H);
        return NULL;
    }
    for (size_t i = 0; i < (size_t)T * rank; i++)
        Z[i] = grand();
    for (size_t i = 0; i < (size_t)rank * K; i++)
        A[i] = grand();
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, T, K, rank, 1.0f / sqrtf((float)rank), Z, rank, A, K,
                0.0f, X, K);
    for (int t = 0; t < T; t++)
        for (int k = 0; k < K; k++) {
            float *x = &X[(size_t)t * K + k];
            *x += 0.1f * grand();
            if (k % 37 == 11)
                *x *= 20.0f;
            if (k == 5)
                *x = 0.0f;
        }
    cblas_ssyrk(CblasRowMajor, CblasLower, CblasTrans, K, T, 2.0f / (float)T, X, K, 0.0f, H, K);
    for (int i = 0; i < K; i++)
        for (int j = i + 1; j < K; j++)
            H[(size_t)i * K + j] = H[(size_t)j * K + i];
    free(Z), free(A), free(X);
    return H;
}

static int run_problem(const char *dir, const problem *pb, const config *cfgs, int ncfg, FILE *man, int first)
{
    char cdir[1024], name[256];
    snprintf(cdir, sizeof cdir, "%s/%s", dir, pb->name);
    if (make_dir(cdir) < 0)
        return -1;
    const size_t N = (size_t)pb->out, K = (size_t)pb->in;
    float *W = malloc(N * K * sizeof(float)), *Wc = malloc(N * K * sizeof(float));
    float *Hc = malloc(K * K * sizeof(float));
    char path[1400];
    if (pb->from)
        snprintf(path, sizeof path, "%s.H.f32", pb->from);
    float *H = pb->from ? read_f32(path, K * K) : make_hessian(pb->in, pb->tokens, pb->rank);
    if (!W || !Wc || !Hc || !H) {
        free(W), free(Wc), free(Hc), free(H);
        return llmq_fail("out of memory");
    }
    if (pb->from) {
        /* A real module: the weights and Hessian llmq-gptq saw. */
        snprintf(path, sizeof path, "%s.W.f32", pb->from);
        float *Wr = read_f32(path, N * K);
        if (!Wr)
            goto fail;
        memcpy(W, Wr, N * K * 4);
        free(Wr);
    } else {
        for (size_t n = 0; n < N; n++) {
            float rs = n % 17 == 3 ? 0.08f : 0.02f; /* a few rows of larger weights */
            for (size_t k = 0; k < K; k++)
                W[n * K + k] = rs * grand();
        }
    }
    if (write_file(cdir, "W.bin", W, N * K * 4) < 0 || write_file(cdir, "H.bin", H, K * K * 4) < 0)
        goto fail;

    fprintf(man, "%s\n    {\"name\": \"%s\", \"out\": %d, \"in\": %d, \"W\": \"%s/W.bin\", \"H\": \"%s/H.bin\",\n"
                 "     \"configs\": [",
            first ? "" : ",", pb->name, pb->out, pb->in, pb->name, pb->name);
    for (int c = 0; c < ncfg; c++) {
        const config *cf = &cfgs[c];
        gptq_params p;
        gptq_params_default(&p);
        p.bits = cf->bits;
        p.group = cf->group;
        p.sym = cf->sym;
        p.act_order = cf->act_order;
        p.static_groups = cf->static_groups;
        memcpy(Wc, W, N * K * 4);
        memcpy(Hc, H, K * K * 4);
        llmq_qweight q;
        gptq_stats st;
        if (gptq_solve(Wc, pb->out, pb->in, Hc, &p, &q, &st) < 0)
            goto fail;
        size_t ng = (size_t)q.ngroups;
        int rc = 0;
        snprintf(name, sizeof name, "%s.q.bin", cf->name);
        rc |= write_file(cdir, name, q.q, N * K);
        snprintf(name, sizeof name, "%s.scales.bin", cf->name);
        rc |= write_file(cdir, name, q.scales, ng * N * 4);
        snprintf(name, sizeof name, "%s.zeros.bin", cf->name);
        rc |= write_file(cdir, name, q.zeros, ng * N * 4);
        snprintf(name, sizeof name, "%s.g_idx.bin", cf->name);
        rc |= write_file(cdir, name, q.g_idx, K * 4);
        qweight_free(&q);
        if (rc)
            goto fail;
        fprintf(man,
                "%s\n       {\"name\": \"%s\", \"bits\": %d, \"group\": %d, \"sym\": %d, \"act_order\": %d, "
                "\"static_groups\": %d, \"damp\": %.9g, \"block\": %d, \"ngroups\": %zu,\n"
                "        \"q\": \"%s/%s.q.bin\", \"scales\": \"%s/%s.scales.bin\", \"zeros\": \"%s/%s.zeros.bin\", "
                "\"g_idx\": \"%s/%s.g_idx.bin\",\n"
                "        \"llmq_loss\": %.9g, \"llmq_damp_used\": %.9g, \"llmq_retries\": %d}",
                c ? "," : "", cf->name, cf->bits, cf->group, cf->sym, cf->act_order, cf->static_groups,
                (double)p.damp, p.block, ng, pb->name, cf->name, pb->name, cf->name, pb->name, cf->name, pb->name,
                cf->name, st.loss, (double)st.damp, st.retries);
        printf("%-10s %-11s loss %.6g damp %g retries %d\n", pb->name, cf->name, st.loss, (double)st.damp,
               st.retries);
    }
    fprintf(man, "]}");
    free(W), free(Wc), free(Hc), free(H);
    return 0;
fail:
    free(W), free(Wc), free(Hc), free(H);
    return -1;
}

int main(int argc, char **argv)
{
    if (argc < 2 || argc == 3) {
        fprintf(stderr, "usage: %s DIR [LLMQ_DUMP_DIR PREFIX:OUT:IN ...]\n"
                        "  with LLMQ_DUMP_DIR (from llmq-gptq --dump), the named real modules too\n", argv[0]);
        return 2;
    }
    const char *dir = argv[1];
    static const problem problems[] = {
        {"w256x512", 256, 512, 2048, 64, NULL},
        {"w512x1024", 512, 1024, 4096, 128, NULL},
        {"w172x64", 172, 64, 512, 16, NULL},
        {"w64x172", 64, 172, 512, 24, NULL}, /* K = 172: a partial last group at G = 32 */
    };
    static const config configs[] = {
        {"plain", 4, 32, 1, 0, 0},
        {"act_order", 4, 32, 1, 1, 0},
        {"act_static", 4, 32, 1, 1, 1},
        {"asym3_pc", 3, -1, 0, 1, 0},
        {"asym4_g128", 4, 128, 0, 0, 0},
    };
    if (make_dir(dir) < 0) {
        llmq_print_error(argv[0]);
        return 1;
    }
    char path[1024];
    snprintf(path, sizeof path, "%s/manifest.json", dir);
    FILE *man = fopen(path, "w");
    if (!man) {
        fprintf(stderr, "%s: %s\n", path, strerror(errno));
        return 1;
    }
    fprintf(man, "{\"format\": \"llmq-gptq-dump-1\", \"cases\": [");
    for (size_t i = 0; i < sizeof problems / sizeof problems[0]; i++)
        if (run_problem(dir, &problems[i], configs, (int)(sizeof configs / sizeof configs[0]), man, i == 0) < 0) {
            fclose(man);
            llmq_print_error(argv[0]);
            return 1;
        }
    for (int a = 3; a < argc; a++) {
        char prefix[256], from[1200], name[64];
        int out, in;
        if (sscanf(argv[a], "%255[^:]:%d:%d", prefix, &out, &in) != 3 || out <= 0 || in <= 0) {
            fprintf(stderr, "%s: '%s' is not PREFIX:OUT:IN\n", argv[0], argv[a]);
            fclose(man);
            return 2;
        }
        snprintf(from, sizeof from, "%s/%s", argv[2], prefix);
        snprintf(name, sizeof name, "real%d", a - 2);
        problem pb = {name, out, in, 0, 0, from};
        if (run_problem(dir, &pb, configs, (int)(sizeof configs / sizeof configs[0]), man, 0) < 0) {
            fclose(man);
            llmq_print_error(argv[0]);
            return 1;
        }
    }
    fprintf(man, "\n]}\n");
    if (fclose(man) != 0) {
        fprintf(stderr, "%s: write failed\n", path);
        return 1;
    }
    return 0;
}
