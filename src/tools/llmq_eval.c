/* llmq-eval: perplexity of a model directory (fp16/bf16/fp32, fake-quant or
 * packed quantized checkpoints) with the GPTQ-paper protocol. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/tokenizer.h"
#include "../backend.h"
#include "../error.h"
#include "../decode.h"
#include "../fakequant.h"
#include "../model.h"
#include "../realquant.h"
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
    "\n"
    "Real quantization (integer kernels instead of float weights):\n"
    "  --real             run a GPTQ / llmq checkpoint on its packed weights (W4A16,\n"
    "                     W8A16, NF4); with --w8a8, a float (SmoothQuant-smoothed) model\n"
    "                     as int8 weights x per-token int8 activations; with --kv int8\n"
    "                     alone, a float model with the int8 KV cache\n"
    "  --kernels-only     with --real on a GPU, run long inputs on the integer kernels too\n"
    "                     (by default they dequantize into a scratch and use cuBLAS)\n"
    "  --kv int8|float    keys and values as int8 (one scale per token and kv head):\n"
    "                     quantize-dequantize, or with --real an int8 cache read by attention\n"
    "\n"
    "Decoding benchmark (KV cache, one token per step; the text supplies the tokens):\n"
    "  --decode           prefill --prompt tokens, then --steps single-token steps, for\n"
    "                     each batch of --decode-batch; prints tokens/s, cache bytes, the\n"
    "                     roofline fraction, and the perplexity of the decoded tokens\n"
    "                     (equal to the windowed one at ctx = prompt + steps + 1)\n"
    "  --decode-batch L   comma-separated batch sizes (default: 1,4,16,64)\n"
    "  --prompt N         prompt tokens (default 128)\n"
    "  --steps N          decoded tokens per sequence (default 128)\n"
    "  --no-graph         launch every kernel of a step from the host instead of\n"
    "                     replaying the step recorded as a CUDA graph\n"
    "  --no-group         run q/k/v and gate/up as separate products, not one launch\n"
    "                     per group (--real decode batches)\n"
    "  --quiet            no progress\n";

/* --decode: one decode_run per batch size, a table or one JSON object. */
static int run_decode(llmq_model *m, const int32_t *ids, size_t n, const int *batches, int nb, int prompt, int steps,
                      int json, const char *kv)
{
    llmq_backend *b = model_backend(m);
    double gbs = decode_copy_bandwidth(b);
    if (json)
        printf("{\"device\": \"%s\", \"dtype\": \"%s\", \"kv\": \"%s\", \"prompt\": %d, \"steps\": %d, "
               "\"copy_gbs\": %.1f, \"runs\": [",
               b->name, llmq_dtype_name(b->dt), kv, prompt, steps, gbs);
    else
        printf("decode: prompt %d, %d steps, %s %s, KV %s, copy bandwidth %.0f GB/s\n"
               "%6s %12s %10s %12s %12s %12s %9s %9s\n",
               prompt, steps, b->name, llmq_dtype_name(b->dt), kv, gbs, "batch", "tokens/s", "ms/step",
               "weights MB", "cache MB", "prefill t/s", "roofline", "ppl");
    for (int i = 0; i < nb; i++) {
        decode_result r;
        if (decode_run(m, ids, n, batches[i], prompt, steps, gbs, &r)) {
            if (json)
                printf("]}\n");
            return 1;
        }
        double prefill_tps = (double)r.batch * r.prompt / r.prefill_s;
        if (json)
            printf("%s{\"batch\": %d, \"tokens_per_s\": %.1f, \"ms_per_step\": %.4f, \"weight_bytes\": %zu, "
                   "\"cache_bytes\": %zu, \"kv_read_bytes\": %zu, \"prefill_tokens_per_s\": %.1f, "
                   "\"roofline_fraction\": %.4f, \"ppl\": %.6f}",
                   i ? ", " : "", r.batch, r.tokens_per_s, r.ms_per_step, r.weight_bytes, r.cache_bytes,
                   r.kv_read_bytes, prefill_tps, r.roofline_fraction, r.ppl);
        else
            printf("%6d %12.1f %10.3f %12.1f %12.1f %12.1f %9.3f %9.4f\n", r.batch, r.tokens_per_s, r.ms_per_step,
                   r.weight_bytes / 1e6, r.cache_bytes / 1e6, prefill_tps, r.roofline_fraction, r.ppl);
        fflush(stdout);
    }
    if (json)
        printf("]}\n");
    return 0;
}

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *text = NULL, *field = NULL, *device = "auto", *dtype = NULL;
    long ctx = 0, max_windows = 0, batch = 0;
    int json = 0, quiet = 0, real = 0, decode = 0, dequant_prefill = 1, graphs = 1, group = 1;
    long prompt = 128, steps = 128;
    const char *decode_batches = "1,4,16,64";
    llmq_kv_mode kv = KV_FLOAT;
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
        } else if (!strcmp(a, "--real")) {
            real = 1;
        } else if (!strcmp(a, "--kernels-only")) {
            dequant_prefill = 0;
        } else if (!strcmp(a, "--kv")) {
            const char *v = cli_value(argc, argv, &i);
            if (!strcmp(v, "int8"))
                kv = KV_INT8_FAKE;
            else if (strcmp(v, "float"))
                cli_die("llmq-eval", "--kv takes int8 or float, not '%s'", v);
        } else if (!strcmp(a, "--decode")) {
            decode = 1;
        } else if (!strcmp(a, "--no-graph")) {
            graphs = 0;
        } else if (!strcmp(a, "--no-group")) {
            group = 0;
        } else if (!strcmp(a, "--decode-batch")) {
            decode_batches = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--prompt")) {
            prompt = cli_long(argc, argv, &i, 1, 1 << 20);
        } else if (!strcmp(a, "--steps")) {
            steps = cli_long(argc, argv, &i, 1, 1 << 20);
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
    if (real && (fq.weight == FQ_W_RTN || fq.weight == FQ_W_NF4))
        cli_die("llmq-eval", "--real runs the checkpoint's own packed weights: quantize with llmq-gptq, not --wbits/--nf4");
    if (real && fq.act == FQ_ACT_PER_TENSOR)
        cli_die("llmq-eval", "--real --w8a8 quantizes activations per token (dynamic); per-tensor is fake-quant only");
    if (real && kv == KV_INT8_FAKE)
        kv = KV_INT8;
    int batches[16], nbatches = 0, max_batch = 0;
    if (decode)
        nbatches = cli_int_list("--decode-batch", decode_batches, batches, 16, 1, 4096);
    for (int i = 0; i < nbatches; i++)
        max_batch = batches[i] > max_batch ? batches[i] : max_batch;

    llmq_backend *b = NULL;
    if (cli_backend("llmq-eval", device, dtype, &b))
        return 1;
    llmq_tokenizer *tok = NULL;
    llmq_model *m = NULL;
    fq_state *fqs = NULL;
    rq_state *rqs = NULL;
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
    if (decode && prompt + steps > cfg.max_pos)
        cli_die("llmq-eval", "--prompt %ld + --steps %ld exceed the model's context (%d)", prompt, steps, cfg.max_pos);
    long rows = decode ? (long)max_batch * prompt : batch * ctx;
    if (decode && rows > (1L << 30) / cfg.hidden)
        cli_die("llmq-eval", "--decode-batch x --prompt = %ld rows is too many", rows);
    if (model_open(&m, model_dir, b, (int)rows))
        goto done;
    model_keep_weights(m, 1);
    model_set_kv_mode(m, kv);
    model_set_graphs(m, graphs);
    model_group_linears(m, group);
    /* --real --kv int8 on a float model: float weights, the int8 KV cache. */
    int float_weights = real && !fq.act && !cfg.quant_method[0] && kv == KV_INT8;
    if (real && !float_weights && rq_install(m, fq.act ? RQ_W8A8 : RQ_PACKED, dequant_prefill, &rqs))
        goto done;
    if (!real && (fq.weight || fq.act) && fq_install(m, &fq, &fqs))
        goto done;
    double t_load = llmq_now();
    if (model_load_all(m))
        goto done;
    t_load = llmq_now() - t_load;
    const char *dt = llmq_dtype_name(b->dt);
    const char *kvname = kv == KV_FLOAT ? "float" : "int8";
    if (decode) {
        rc = run_decode(m, ids, n, batches, nbatches, (int)prompt, (int)steps, json, kvname);
        goto done;
    }
    ppl_opts o = {.ctx = (int)ctx, .max_windows = max_windows, .batch = (int)batch, .quiet = quiet || json};
    ppl_result r;
    if (ppl_run(m, ids, n, &o, &r))
        goto done;
    /* Linears on the integer kernels and those the checkpoint keeps in float. */
    int nk = 0, nf = 0;
    if (rqs)
        rq_counts(rqs, &nk, &nf);
    if (json)
        printf("{\"ppl\": %.6f, \"windows\": %ld, \"tokens\": %ld, \"tokens_per_s\": %.1f, \"ctx\": %ld, "
               "\"seconds\": %.3f, \"load_seconds\": %.3f, \"device\": \"%s\", \"dtype\": \"%s\", "
               "\"text_tokens\": %zu, \"real\": %s, \"kernel_linears\": %d, \"float_linears\": %d, \"kv\": \"%s\", "
               "\"weight_bytes\": %zu}\n",
               r.ppl, r.windows, r.tokens, r.tokens_per_s, ctx, r.seconds, t_load, b->name, dt, n,
               real ? "true" : "false", nk, nf, kvname, model_weight_bytes(m));
    else if (rqs)
        printf("ppl %.5f  (ctx %ld, %ld windows, %ld scored tokens, %.0f tokens/s, %s %s, real-quant kernels on %d "
               "linears, %d in float%s)\n",
               r.ppl, ctx, r.windows, r.tokens, r.tokens_per_s, b->name, dt, nk, nf, kv == KV_FLOAT ? "" : ", int8 KV");
    else
        printf("ppl %.5f  (ctx %ld, %ld windows, %ld scored tokens, %.0f tokens/s, %s %s%s)\n", r.ppl, ctx,
               r.windows, r.tokens, r.tokens_per_s, b->name, dt, kv == KV_FLOAT ? "" : ", int8 KV");
    rc = 0;
done:
    if (rc)
        llmq_print_error("llmq-eval");
    free(ids);
    model_close(m);
    fq_free(fqs);
    rq_free(rqs);
    tok_free(tok);
    b->destroy(b);
    return rc;
}
