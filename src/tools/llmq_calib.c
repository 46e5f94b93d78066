/* llmq-calib: per-input-channel activation statistics of every linear layer
 * over a calibration corpus (SmoothQuant's calibration step). */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../calib/layerwise.h"
#include "../../calib/sampling.h"
#include "../../calib/stats.h"
#include "../error.h"
#include "../progress.h"
#include "cli.h"

static const char *USAGE =
    "usage: llmq-calib --model DIR --data CORPUS -o act_scales.safetensors [options]\n"
    "\n"
    "Runs the model over calibration samples one layer at a time and records,\n"
    "for the input of every linear layer, the per-channel max |x| and mean |x|\n"
    "and the per-token max |x| distribution (docs/ACT_SCALES.md).\n"
    "\n"
    "  --data CORPUS      .jsonl, .jsonl.zst or plain text\n"
    "  --field NAME       JSON field holding the text (default: text)\n"
    "  --samples N        number of samples (default 512)\n"
    "  --seqlen L         tokens per sample (default 512)\n"
    "  --seed S           sampling seed (default 42)\n"
    "  --windows          GPTQ's sampling: N random windows of exactly L tokens of\n"
    "                     the records joined by blank lines (default: SmoothQuant's,\n"
    "                     N records each with BOS, truncated to L tokens)\n"
    "  --heldout K        keep the last K samples out of the statistics and store\n"
    "                     their activations (for llmq-smooth --alpha auto);\n"
    "                     default min(16, N/8); 0 = count every sample\n"
    "  --heldout-tokens T held-out tokens kept per linear input (default 512)\n"
    "  --device D, --dtype T   as in llmq-eval\n"
    "  --report           print the outlier picture per layer (largest channels,\n"
    "                     max/median of the channel abs-max)\n"
    "  --json             print a JSON summary\n"
    "  --quiet            no progress\n";

int main(int argc, char **argv)
{
    const char *model_dir = NULL, *data = NULL, *field = NULL, *out = NULL, *device = "auto", *dtype = NULL;
    long samples = 512, seqlen = 512, heldout = -1, heldout_tokens = 512;
    uint64_t seed = 42;
    int windows = 0, report = 0, json = 0, quiet = 0;
    cli_set_prog("llmq-calib");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            model_dir = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--data")) {
            data = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--field")) {
            field = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            out = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--samples")) {
            samples = cli_long(argc, argv, &i, 1, 1 << 24);
        } else if (!strcmp(a, "--seqlen")) {
            seqlen = cli_long(argc, argv, &i, 1, 1 << 20);
        } else if (!strcmp(a, "--seed")) {
            seed = (uint64_t)cli_long(argc, argv, &i, 0, INT64_MAX);
        } else if (!strcmp(a, "--heldout")) {
            heldout = cli_long(argc, argv, &i, 0, 1 << 24);
        } else if (!strcmp(a, "--heldout-tokens")) {
            heldout_tokens = cli_long(argc, argv, &i, 0, 1 << 20);
        } else if (!strcmp(a, "--windows")) {
            windows = 1;
        } else if (!strcmp(a, "--device")) {
            device = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--dtype")) {
            dtype = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--report")) {
            report = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else {
            cli_die("llmq-calib", "unknown option '%s' (see --help)", a);
        }
    }
    if (!model_dir || !data || !out)
        cli_die("llmq-calib", "--model, --data and -o are required (see --help)");

    llmq_backend *b = NULL;
    if (cli_backend("llmq-calib", device, dtype, &b))
        return 1;
    llmq_tokenizer *tok = NULL;
    llmq_model *m = NULL;
    calib_stats *st = NULL;
    calib_set set = {0};
    calib_pass pass = {0};
    int32_t *held_lens = NULL;
    int rc = 1;
    double t0 = llmq_now();
    if (tok_load(&tok, model_dir) ||
        calib_sample(&set, tok, data, field, windows ? CALIB_WINDOWS : CALIB_RECORDS, (int)samples, (int)seqlen, seed))
        goto done;
    int held = heldout >= 0 ? (int)heldout : (set.n / 8 < 16 ? set.n / 8 : 16);
    if (held >= set.n)
        cli_die("llmq-calib", "--heldout %d leaves no sample to count (%d samples)", held, set.n);
    int chunk = calib_chunk_rows(&set, strcmp(b->name, "cpu") ? 16384 : 8192);
    if (model_open(&m, model_dir, b, chunk) || calib_stats_new(&st, m, (int)heldout_tokens))
        goto done;
    const llmq_config *c = model_config(m);
    size_t total = set.off[set.n];
    if (!quiet)
        fprintf(stderr,
                "llmq-calib: %d samples (%zu tokens, %s sampling from %zu records), %d held out; hidden states "
                "%.1f MiB on %s\n",
                set.n, total, windows ? "window" : "record", set.records, held,
                (double)total * c->hidden * llmq_dtype_size(b->dt) / 1048576.0, b->name);
    held_lens = held ? malloc((size_t)held * sizeof *held_lens) : NULL;
    if (held && !held_lens) {
        llmq_fail("out of memory");
        goto done;
    }
    for (int i = 0; i < held; i++)
        held_lens[i] = calib_len(&set, set.n - held + i);
    if (held)
        calib_stats_set_heldout_ids(st, set.ids + set.off[set.n - held], held_lens, held);
    llmq_hooks hooks = calib_stats_hooks(st);
    model_set_hooks(m, &hooks);
    if (calib_pass_begin(&pass, m, &set))
        goto done;
    llmq_progress pr;
    progress_start(&pr, "layer", c->n_layers, quiet || json);
    double tf = llmq_now();
    for (int l = 0; l < c->n_layers; l++) {
        calib_stats_set_heldout(st, 0);
        if (calib_pass_layer(&pass, l, 0, set.n - held))
            goto done;
        calib_stats_set_heldout(st, 1);
        if (held && calib_pass_layer(&pass, l, set.n - held, held))
            goto done;
        model_unload_layer(m, l);
        if (calib_stats_finish_layer(st, l))
            goto done;
        double el = llmq_now() - tf;
        progress_update(&pr, l + 1, "tok/s", (double)total * (l + 1) / c->n_layers / (el > 0 ? el : 1e-9), NULL);
    }
    progress_end(&pr);
    double forward_s = llmq_now() - tf;

    char s_samples[32], s_seqlen[32], s_seed[32], s_tokens[32], s_held[32], s_heldtok[32];
    snprintf(s_samples, sizeof s_samples, "%d", set.n);
    snprintf(s_seqlen, sizeof s_seqlen, "%ld", seqlen);
    snprintf(s_seed, sizeof s_seed, "%" PRIu64, seed);
    snprintf(s_tokens, sizeof s_tokens, "%ld", calib_stats_tokens(st));
    snprintf(s_held, sizeof s_held, "%d", held);
    snprintf(s_heldtok, sizeof s_heldtok, "%ld", calib_stats_heldout_tokens(st));
    const char *const meta[][2] = {
        {"format", "llmq-act-scales"},  {"version", "1"},
        {"model", model_dir},           {"corpus", data},
        {"field", field ? field : "text"}, {"mode", windows ? "windows" : "records"},
        {"samples", s_samples},         {"seqlen", s_seqlen},
        {"seed", s_seed},               {"tokens", s_tokens},
        {"heldout_samples", s_held},    {"heldout_tokens", s_heldtok},
        {"llmq_version", LLMQ_VERSION}, {"dtype", llmq_dtype_name(b->dt)},
        {"device", b->name},
    };
    if (calib_stats_write(st, out, meta, (int)(sizeof meta / sizeof meta[0])))
        goto done;
    if (report)
        calib_stats_report(st, stdout, 5);
    if (json) {
        printf("{\"samples\": %d, \"tokens\": %ld, \"heldout_samples\": %d, \"seconds\": %.3f, "
               "\"forward_seconds\": %.3f, \"tokens_per_s\": %.1f, \"output\": ",
               set.n, calib_stats_tokens(st), held, llmq_now() - t0, forward_s, (double)total / forward_s);
        cli_json_string(stdout, out);
        printf("}\n");
    } else if (!quiet)
        fprintf(stderr, "llmq-calib: wrote %s (%ld tokens counted, %.0f tokens/s)\n", out, calib_stats_tokens(st),
                (double)total / forward_s);
    rc = 0;
done:
    if (rc)
        llmq_print_error("llmq-calib");
    calib_pass_end(&pass);
    calib_stats_free(st);
    free(held_lens);
    calib_set_free(&set);
    model_close(m);
    tok_free(tok);
    b->destroy(b);
    return rc;
}
