/* The whole CUDA forward against the CPU reference on a real model: the
 * per-position logits of the same windows, relative L2 error per dtype
 * (f32 < 1e-4, f16 < 2e-3, bf16 < 2e-2), and the perplexity of those windows.
 * usage: test_forward_cuda MODEL_DIR TEXT [ctx] [windows]; exits 77 without a GPU. */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/tokenizer.h"
#include "src/backend.h"
#include "src/error.h"
#include "src/model.h"
#include "src/perplexity.h"

static int forward(llmq_backend *b, const char *dir, const int32_t *ids, int nwin, int ctx, float *logits,
                   double *nll)
{
    llmq_model *m;
    if (model_open(&m, dir, b, nwin * ctx))
        return -1;
    *nll = 0;
    int rc = model_forward(m, ids, nwin, ctx, nll, logits);
    model_close(m);
    return rc;
}

int main(int argc, char **argv)
{
    if (argc < 3) {
        fprintf(stderr, "usage: test_forward_cuda MODEL_DIR TEXT [ctx] [windows]\n");
        return 2;
    }
    if (!llmq_cuda_available()) {
        printf("skipped: no GPU\n");
        return 77;
    }
    const char *dir = argv[1];
    int ctx = argc > 3 ? atoi(argv[3]) : 512, nwin = argc > 4 ? atoi(argv[4]) : 8;
    llmq_tokenizer *tok;
    int32_t *ids;
    size_t n;
    llmq_config cfg;
    if (config_load(&cfg, dir) || tok_load(&tok, dir) || ppl_tokenize(tok, argv[2], NULL, &ids, &n)) {
        llmq_print_error("test_forward_cuda");
        return 1;
    }
    if (n < (size_t)ctx * nwin)
        nwin = (int)(n / ctx);
    size_t nl = (size_t)nwin * ctx * cfg.vocab;
    float *ref = malloc(nl * sizeof(float)), *got = malloc(nl * sizeof(float));
    llmq_backend *cpu;
    double nll_ref;
    if (!ref || !got || llmq_backend_cpu(&cpu) || forward(cpu, dir, ids, nwin, ctx, ref, &nll_ref)) {
        llmq_print_error("test_forward_cuda");
        return 1;
    }
    const llmq_dtype dts[3] = {LLMQ_F32, LLMQ_F16, LLMQ_BF16};
    const double tol[3] = {1e-4, 2e-3, 2e-2};
    int passed = 0, failed = 0;
    for (int d = 0; d < 3; d++) {
        llmq_backend *b;
        double nll;
        for (size_t i = 0; i < nl; i++)
            got[i] = NAN; /* poison: every logit must be written */
        if (llmq_backend_cuda(&b, 0, dts[d]) || forward(b, dir, ids, nwin, ctx, got, &nll)) {
            llmq_print_error("test_forward_cuda");
            failed++;
            continue;
        }
        double num = 0, den = 0;
        for (size_t i = 0; i < nl; i++) {
            double e = (double)got[i] - ref[i];
            num += e * e, den += (double)ref[i] * ref[i];
        }
        double err = sqrt(num / den);
        int ok = err < tol[d]; /* NaN fails */
        long scored = (long)nwin * (ctx - 1);
        printf("%s forward %s: %d windows x %d, logits rel L2 %.3g (limit %g), ppl cuda %.5f cpu %.5f\n",
               ok ? "ok  " : "FAIL", llmq_dtype_name(dts[d]), nwin, ctx, err, tol[d], exp(nll / scored),
               exp(nll_ref / scored));
        ok ? passed++ : failed++;
        b->destroy(b);
    }
    printf("%d passed, %d failed\n", passed, failed);
    cpu->destroy(cpu);
    free(ref), free(got), free(ids);
    tok_free(tok);
    return failed ? 1 : 0;
}
