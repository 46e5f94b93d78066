/* llmq-smooth: SmoothQuant a Hugging Face Llama-family model with the
 * activation statistics of llmq-calib, writing a new model directory that
 * computes the same function in float and quantizes better to W8A8. */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../smooth/smooth.h"
#include "../error.h"
#include "../progress.h"
#include "cli.h"

static const char *PROG = "llmq-smooth";

static const char *USAGE =
    "usage: llmq-smooth --model DIR --scales FILE --alpha A|auto -o OUTDIR [options]\n"
    "\n"
    "SmoothQuant: per input channel j of the linears sharing one input,\n"
    "  s_j = max|X_j|^alpha / max|W_:,j|^(1-alpha)   (s >= 1e-5)\n"
    "input_layernorm /= s and q/k/v columns *= s; post_attention_layernorm /= s\n"
    "and gate/up columns *= s. The float model computes the same function;\n"
    "per-token int8 activations lose less. Writes a complete model directory\n"
    "(weights in the input dtype, config and tokenizer files copied).\n"
    "\n"
    "  --model DIR      Hugging Face model directory (llama, mistral, qwen2; float)\n"
    "  --scales FILE    act_scales.safetensors from llmq-calib for this model\n"
    "  --alpha A|auto   migration strength in [0, 1] (0.5 is SmoothQuant's default);\n"
    "                   auto: per layer and group, the alpha of 0, 0.05, ..., 1 with\n"
    "                   the least W8A8 output error on the held-out activations; then\n"
    "                   that choice and every uniform alpha are scored by the W8A8\n"
    "                   loss of the held-out samples and the best is kept\n"
    "  --local-only     auto without the held-out loss stage\n"
    "  --device D, --dtype T   where the held-out loss runs (as in llmq-eval)\n"
    "  -o, --output DIR where to write the smoothed model\n"
    "  --fold-vo        also smooth o_proj's input into v_proj's rows (exact, GQA-aware)\n"
    "  --fold-ud        also smooth down_proj's input into up_proj's rows (exact)\n"
    "  --force          replace OUTDIR if it exists and is not empty\n"
    "  --quiet          no progress\n"
    "  --json           print a JSON summary (output, alpha, alphas per layer and group,\n"
    "                   auto's held-out loss per candidate) instead of the tables\n";

static void on_layer(void *ctx, int done, int total)
{
    llmq_progress *p = ctx;
    p->total = total; /* the layer count is known once the model is open */
    progress_update(p, done, NULL, 0, NULL);
}

static double parse_alpha(const char *v)
{
    if (!strcmp(v, "auto"))
        return SMOOTH_ALPHA_AUTO;
    char *end;
    errno = 0;
    double a = strtod(v, &end);
    if (errno || end == v || *end || !(a >= 0.0 && a <= 1.0))
        cli_die(PROG, "--alpha: '%s' is not a number in [0, 1] or 'auto'", v);
    return a;
}

static void print_alphas(const smooth_result *r)
{
    printf("layer");
    for (int g = 0; g < SMOOTH_NGROUPS; g++)
        if (r->mask & (1u << g))
            printf("  %6s", smooth_group_name((smooth_group)g));
    printf("\n");
    for (int i = 0; i < r->n_layers; i++) {
        printf("%5d", i);
        for (int g = 0; g < SMOOTH_NGROUPS; g++)
            if (r->mask & (1u << g))
                printf("  %6.2f", r->alpha[g][i]);
        printf("\n");
    }
}

static void print_candidates(const smooth_result *r)
{
    printf("held-out W8A8 loss (NLL per token, perplexity) of each candidate:\n");
    for (int k = 0; k <= SMOOTH_NGRID; k++) {
        char name[32];
        if (k == 0)
            snprintf(name, sizeof name, "per-layer choice");
        else
            snprintf(name, sizeof name, "alpha %.2f", smooth_grid_alpha(k - 1));
        printf("  %-17s %.6f  %.5f%s\n", name, r->cand_nll[k], exp(r->cand_nll[k]), k == r->chosen ? "  <- chosen" : "");
    }
}

static void print_json(const smooth_opts *o, const smooth_result *r, const char *alpha, double seconds)
{
    char *alphas = smooth_alphas_json(r);
    printf("{\"output\": ");
    cli_json_string(stdout, o->out_dir);
    printf(", \"alpha\": ");
    cli_json_string(stdout, alpha);
    printf(", \"alphas\": %s, \"tensors_changed\": %d, \"tensors_total\": %d, \"seconds\": %.3f",
           alphas ? alphas : "null", r->tensors_changed, r->tensors_total, seconds);
    if (r->scored) {
        printf(", \"heldout_nll\": {\"per_layer_choice\": %.6f", r->cand_nll[0]);
        for (int k = 0; k < SMOOTH_NGRID; k++)
            printf(", \"%.2f\": %.6f", smooth_grid_alpha(k), r->cand_nll[1 + k]);
        printf("}, \"chosen\": ");
        if (r->chosen == 0)
            printf("\"per_layer_choice\"");
        else
            printf("\"%.2f\"", smooth_grid_alpha(r->chosen - 1));
    }
    printf("}\n");
    free(alphas);
}

int main(int argc, char **argv)
{
    smooth_opts o = {.alpha = -2.0};
    const char *alpha = NULL;
    int quiet = 0, local_only = 0, json = 0;
    const char *device = "auto", *dtype = NULL;
    cli_set_prog("llmq-smooth");
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            o.model_dir = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--scales")) {
            o.scales = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--alpha")) {
            alpha = cli_value(argc, argv, &i);
            o.alpha = parse_alpha(alpha);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            o.out_dir = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--fold-vo")) {
            o.fold_vo = 1;
        } else if (!strcmp(a, "--fold-ud")) {
            o.fold_ud = 1;
        } else if (!strcmp(a, "--force")) {
            o.force = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else if (!strcmp(a, "--local-only")) {
            local_only = 1;
        } else if (!strcmp(a, "--device")) {
            device = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--dtype")) {
            dtype = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--quiet")) {
            quiet = 1;
        } else {
            cli_die(PROG, "unknown option '%s' (see --help)", a);
        }
    }
    if (!o.model_dir || !o.scales || !alpha || !o.out_dir)
        cli_die(PROG, "--model, --scales, --alpha and -o are required (see --help)");

    llmq_backend *b = NULL;
    if (o.alpha == SMOOTH_ALPHA_AUTO && !local_only) {
        if (cli_backend(PROG, device, dtype, &b))
            return 1;
        o.backend = b;
    }
    llmq_progress p;
    progress_start(&p, "layer", 1, quiet);
    o.on_layer = on_layer;
    o.ctx = &p;
    smooth_result r;
    double t0 = llmq_now();
    int rc = smooth_model(&o, &r);
    if (b)
        b->destroy(b);
    progress_end(&p);
    if (rc) {
        llmq_print_error(PROG);
        return 1;
    }
    if (json)
        print_json(&o, &r, alpha, llmq_now() - t0);
    else if (o.alpha == SMOOTH_ALPHA_AUTO) {
        if (r.scored)
            print_candidates(&r);
        print_alphas(&r);
    }
    if (!quiet)
        fprintf(stderr, "%s: wrote %s (%d of %d tensors smoothed, alpha %s, %.1f s)\n", PROG, o.out_dir,
                r.tensors_changed, r.tensors_total, alpha, llmq_now() - t0);
    smooth_result_free(&r);
    return 0;
}
