/* llmq-eval: perplexity of a model directory (fp16/bf16/fp32, fake-quant or
 * packed quantized checkpoints) with the GPTQ-paper protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/tokenizer.h"
#include "../backend.h"
#include "../error.h"
#include "../model.h"
#include "../fakequant.h"
#include "../perplexity.h"
#include "../progress.h"
#include "cli.h"

static const char *USAGE =
    "usage: llmq-eval --model DIR --text FILE [options]\n"
    "\n"
    "Perplexity with the GPTQ/AWQ/SmoothQuant protocol: the lines of FILE (each\n"
    "with its newline) joined by blank lines, tokenized once with BOS, cut into\n"
    "non-overlapping windows of --ctx tokens; NLL over the ctx-1 predictions of\n"
    "each window.\n"
    "\n"
    "  --model DIR        Hugging Face model directory (float, GPTQ or llmq format)\n"
    "  --text FILE        evaluation text (.txt, .jsonl, .jsonl.zst)\n"
    "  --field NAME       JSON field holding the text (default: text)\n"
    "  --ctx N            window length (default: min(2048, model context))\n"
    "  --max-windows N    evaluate only the first N windows\n"
    "  --batch N          windows per forward pass (default: fits ~8k tokens)\n"
    "  --device D         cpu | cuda | auto (default: auto = cuda when a GPU is present)\n"
    "  --dtype T          f32 | f16 | bf16 (default: f16 on cuda, f32 on cpu; cpu is f32 only)\n"
    "  --json             print one JSON object {ppl, windows, tokens, tokens_per_s, ...}\n"
    "\n"
    "Fake quantization (quantize-dequantize in the float path):\n"
    "  --w8a8 [per-token|per-tensor]  int8 weights per output channel (abs-max/127) and\n"
    "                     int8 activations at every linear input: per token, dynamic\n"
    "                     (default), or per tensor with static scales from --act-scales\n"
    "  --act-scales FILE  act_scales.safetensors of llmq-calib (for per-tensor)\n"
    "  --wbits B          weight-only round-to-nearest with B bits (2..8)\n"
    "  --group G          group size along the input (-1 = per output channel; default 128)\n"
    "  --sym | --asym     symmetric (default) or asymmetric grid\n"
    "  --nf4              NormalFloat-4, blocks of 64 (bitsandbytes); --nf4-double adds\n"
    "                     double quantization of the block scales\n"
    "  --quiet            no progress\n";

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *text = NULL, *field = NULL, *device = "auto", *dtype = NULL;
    long ctx = 0, max_windows = 0, batch = 0;
    int json = 0, quiet = 0;
    fq_opts fq = {.group = 128, .sym = 1};
    cli_set_prog("llmq-eval");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            model_dir = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--text")) {
            text = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--field")) {
            field = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--ctx")) {
            ctx = cli_long(argc, argv, &i, 2, 1 << 20);
        } else if (!strcmp(a, "--max-windows")) {
            max_windows = cli_long(argc, argv, &i, 1, 1L << 40);
        } else if (!strcmp(a, "--batch")) {
            batch = cli_long(argc, argv, &i, 1, 1 << 16);
        } else if (!strcmp(a, "--device")) {
            device = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--dtype")) {
            dtype = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--w8a8")) {
            fq.weight = FQ_W_INT8_CHANNEL, fq.act = FQ_ACT_PER_TOKEN;
            if (i + 1 < argc && !strcmp(argv[i + 1], "per-tensor"))
                fq.act = FQ_ACT_PER_TENSOR, i++;
            else if (i + 1 < argc && !strcmp(argv[i + 1], "per-token"))
                i++;
        } else if (!strcmp(a, "--act-scales")) {
            fq.act_scales = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--wbits")) {
            fq.weight = FQ_W_RTN, fq.wbits = (int)cli_long(argc, argv, &i, 2, 8);
        } else if (!strcmp(a, "--group")) {
            fq.group = (int)cli_long(argc, argv, &i, -1, 1 << 20);
            if (fq.group == 0)
                cli_die("llmq-eval", "--group must be positive or -1");
        } else if (!strcmp(a, "--sym")) {
            fq.sym = 1;
        } else if (!strcmp(a, "--asym")) {
            fq.sym = 0;
        } else if (!strcmp(a, "--nf4")) {
            fq.weight = FQ_W_NF4;
        } else if (!strcmp(a, "--nf4-double")) {
            fq.weight = FQ_W_NF4, fq.nf4_double = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else {
            cli_die("llmq-eval", "unknown option '%s' (see --help)", a);
        }
    }
    if (!model_dir || !text)
        cli_die("llmq-eval", "--model and --text are required (see --help)");
    if (fq.act == FQ_ACT_PER_TENSOR && !fq.act_scales)
        cli_die("llmq-eval", "--w8a8 per-tensor needs --act-scales FILE (from llmq-calib)");

    llmq_backend *b = NULL;
    if (cli_backend("llmq-eval", device, dtype, &b))
        return 1;
    llmq_tokenizer *tok = NULL;
    llmq_model *m = NULL;
    fq_state *fqs = NULL;
    int32_t *ids = NULL;
    size_t n = 0;
    int rc = 1;
    llmq_config cfg;
    if (config_load(&cfg, model_dir))
        goto done;
    if (ctx == 0)
        ctx = cfg.max_pos < 2048 ? cfg.max_pos : 2048;
    if (batch == 0)
        batch = ctx >= 8192 ? 1 : 8192 / ctx;
    if (tok_load(&tok, model_dir) || ppl_tokenize(tok, text, field, &ids, &n))
        goto done;
    if (model_open(&m, model_dir, b, (int)(batch * ctx)))
        goto done;
    model_keep_weights(m, 1);
    if ((fq.weight || fq.act) && fq_install(m, &fq, &fqs))
        goto done;
    double t_load = llmq_now();
    if (model_load_all(m))
        goto done;
    t_load = llmq_now() - t_load;
    ppl_opts o = {.ctx = (int)ctx, .max_windows = max_windows, .batch = (int)batch, .quiet = quiet || json};
    ppl_result r;
    if (ppl_run(m, ids, n, &o, &r))
        goto done;
    const char *dt = llmq_dtype_name(b->dt);
    if (json)
        printf("{\"ppl\": %.6f, \"windows\": %ld, \"tokens\": %ld, \"tokens_per_s\": %.1f, \"ctx\": %ld, "
               "\"seconds\": %.3f, \"load_seconds\": %.3f, \"device\": \"%s\", \"dtype\": \"%s\", "
               "\"text_tokens\": %zu}\n",
               r.ppl, r.windows, r.tokens, r.tokens_per_s, ctx, r.seconds, t_load, b->name, dt, n);
    else
        printf("ppl %.5f  (ctx %ld, %ld windows, %ld scored tokens, %.0f tokens/s, %s %s)\n", r.ppl, ctx,
               r.windows, r.tokens, r.tokens_per_s, b->name, dt);
    rc = 0;
done:
    if (rc)
        llmq_print_error("llmq-eval");
    free(ids);
    model_close(m);
    fq_free(fqs);
    tok_free(tok);
    b->destroy(b);
    return rc;
}
