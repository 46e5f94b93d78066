/* Evaluation throughput of the model runner against the time of its GEMMs
 * alone (cuBLAS through the same backend, same shapes, same run): the
 * ratio says how much the non-GEMM work (norms, rope, attention, NLL)
 * costs. usage: bench_forward MODEL_DIR [ctx 2048] [windows 4] [iters 5] [f16|bf16] */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "src/backend.h"
#include "src/error.h"
#include "src/model.h"
#include "src/progress.h"
#include "src/rng.h"

static double median(double *v, int n)
{
    for (int i = 1; i < n; i++)
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            double t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
        }
    return v[n / 2];
}

/* One forward pass worth of GEMMs: 7 per layer plus lm_head, on random data. */
static int gemm_pass(llmq_backend *b, const llmq_config *c, int rows, void *x, void *y, void *w)
{
    for (int l = 0; l < c->n_layers; l++)
        for (int k = 0; k < LIN_COUNT; k++) {
            int in, out;
            config_lin_shape(c, (llmq_lin)k, &in, &out);
            if (b->linear(b, y, x, w, NULL, rows, in, out))
                return -1;
        }
    return b->linear(b, y, x, w, NULL, rows, c->hidden, c->vocab);
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "usage: bench_forward MODEL_DIR [ctx] [windows] [iters] [f16|bf16]\n");
        return 2;
    }
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    const char *dir = argv[1];
    int ctx = argc > 2 ? atoi(argv[2]) : 2048, nwin = argc > 3 ? atoi(argv[3]) : 4;
    int iters = argc > 4 ? atoi(argv[4]) : 5;
    llmq_dtype dt = argc > 5 && !strcmp(argv[5], "bf16") ? LLMQ_BF16 : LLMQ_F16;
    int rows = ctx * nwin;
    llmq_backend *b;
    llmq_model *m;
    if (llmq_backend_cuda(&b, 0, dt) || model_open(&m, dir, b, rows)) {
        llmq_print_error("bench_forward");
        return 1;
    }
    model_keep_weights(m, 1);
    llmq_config cfg = *model_config(m); /* outlives the model */
    const llmq_config *c = &cfg;
    int32_t *ids = malloc((size_t)rows * sizeof *ids);
    llmq_rng rng;
    llmq_rng_seed(&rng, 1);
    for (int i = 0; i < rows; i++)
        ids[i] = (int32_t)llmq_rng_below(&rng, (uint64_t)c->vocab);
    double t_load = llmq_now(), nll = 0;
    if (model_forward(m, ids, nwin, ctx, &nll, NULL)) { /* warm-up, loads the weights */
        llmq_print_error("bench_forward");
        return 1;
    }
    t_load = llmq_now() - t_load;
    double tf[32], tg[32];
    for (int it = 0; it < iters && it < 32; it++) {
        double t0 = llmq_now();
        if (model_forward(m, ids, nwin, ctx, &nll, NULL)) {
            llmq_print_error("bench_forward");
            return 1;
        }
        tf[it] = llmq_now() - t0;
    }
    model_close(m);
    /* The GEMMs alone: inputs and weights of the largest shapes, random. */
    size_t maxin = (size_t)(c->ffn > c->hidden ? c->ffn : c->hidden);
    size_t maxout = (size_t)(c->vocab > c->ffn ? c->vocab : c->ffn);
    size_t nx = (size_t)rows * maxin, ny = (size_t)rows * maxout, nw = maxin * maxout;
    size_t es = llmq_dtype_size(dt), nmax = nx > nw ? nx : nw;
    float *host = malloc(nmax * sizeof(float));
    for (size_t i = 0; i < nmax; i++)
        host[i] = (float)((double)llmq_rng_below(&rng, 2000) / 1000.0 - 1.0) * 0.05f;
    void *x = b->alloc(b, nx * es), *y = b->alloc(b, ny * es), *w = b->alloc(b, nw * es);
    if (!x || !y || !w || b->upload(b, x, dt, host, LLMQ_F32, nx) || b->upload(b, w, dt, host, LLMQ_F32, nw) ||
        gemm_pass(b, c, rows, x, y, w) || b->sync(b)) {
        llmq_print_error("bench_forward");
        return 1;
    }
    for (int it = 0; it < iters && it < 32; it++) {
        double t0 = llmq_now();
        if (gemm_pass(b, c, rows, x, y, w) || b->sync(b)) {
            llmq_print_error("bench_forward");
            return 1;
        }
        tg[it] = llmq_now() - t0;
    }
    double f = median(tf, iters), g = median(tg, iters);
    double flops = 0;
    for (int k = 0; k < LIN_COUNT; k++) {
        int in, out;
        config_lin_shape(c, (llmq_lin)k, &in, &out);
        flops += 2.0 * rows * in * out * c->n_layers;
    }
    flops += 2.0 * rows * c->hidden * c->vocab;
    printf("bench_forward %s: %d layers, hidden %d, ffn %d, vocab %d, %d windows x %d tokens\n",
           llmq_dtype_name(dt), c->n_layers, c->hidden, c->ffn, c->vocab, nwin, ctx);
    printf("  weights load + first pass %.2f s\n", t_load);
    printf("  forward (eval path, NLL included): %.2f ms  -> %.0f tokens/s, %.0f TFLOP/s in GEMMs\n", f * 1e3,
           rows / f, flops / f / 1e12);
    printf("  GEMMs alone (cuBLAS, same shapes): %.2f ms  -> %.0f TFLOP/s\n", g * 1e3, flops / g / 1e12);
    printf("  ratio GEMM bound / forward = %.3f\n", g / f);
    b->destroy(b);
    return 0;
}
