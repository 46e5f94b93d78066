/* llmq-gptq: GPTQ / RTN / NF4 weight quantization and export. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../gptq/pipeline.h"
#include "../error.h"
#include "cli.h"

static const char *USAGE =
    "usage: llmq-gptq --model DIR [--data CORPUS] --bits B --group G -o OUTDIR [options]\n"
    "\n"
    "Quantizes every linear layer of a Llama-family model and writes a checkpoint.\n"
    "\n"
    "  --method M         gptq (default; needs --data) | rtn | nf4\n"
    "  --bits B           2, 3, 4 or 8 (2..8 with --format llmq); default 4\n"
    "  --group G          group size along the input channels, -1 = per channel; default 128\n"
    "  --sym | --asym     symmetric (default) or asymmetric grid\n"
    "  --act-order        quantize channels in order of decreasing Hessian diagonal\n"
    "  --static-groups    fix the group grids before the solve (default with --act-order:\n"
    "                     inference then needs no reordering); --no-static-groups to turn off\n"
    "  --true-sequential  inside a layer, calibrate o on quantized q/k/v, and so on\n"
    "  --damp F           Hessian damping, fraction of its mean diagonal (default 0.01)\n"
    "  --block N          lazy-batch block (default 128)\n"
    "  --nf4-double       NF4 with double-quantized block scales (bitsandbytes)\n"
    "  --data CORPUS      calibration corpus (.jsonl, .jsonl.zst, text); --field NAME\n"
    "  --samples N        calibration samples (default 128)\n"
    "  --seqlen L         tokens per sample (default 2048, at most the model's context)\n"
    "  --seed S           sampling seed (default 0)\n"
    "  --records          sample N records (truncated to L) instead of N random windows\n"
    "  --format F         gptq (v1, default for sym) | gptq_v2 (default for asym) | llmq\n"
    "  --skip-unfit       keep modules the format cannot hold in float (listed in\n"
    "                     quantization_config.dynamic) instead of refusing\n"
    "  --shard-gb G       output shard size (default: like the input)\n"
    "  --device D, --dtype T   as in llmq-eval; on cuda the solves run on the GPU too\n"
    "  --cpu-solver       solve on the CPU (LAPACK) even when the forward runs on cuda\n"
    "  --dump DIR         also write every module's W and H (fp32) into DIR\n"
    "  --force            replace a non-empty OUTDIR\n"
    "  --restart          discard the finished layers in OUTDIR.partial and start over\n"
    "  --no-resume        neither resume from nor keep OUTDIR.partial\n"
    "  --quiet            no progress\n"
    "  --json             print a JSON summary: output, modules, skipped, resumed_layers,\n"
    "                     seconds and its split (forward, solve, pack, write)\n"
    "\n"
    "OUTDIR gets quant_log.csv: per module the GPTQ loss, weight error, damping, time.\n"
    "\n"
    "GPTQ resumes after a crash or Ctrl-C: each finished layer is saved in OUTDIR.partial\n"
    "(with job.json, the settings and input files it depends on), and rerunning the same\n"
    "command goes on from the first unfinished layer, with the same output bytes as an\n"
    "uninterrupted run. A different job is refused, naming what changed. OUTDIR.partial\n"
    "is removed once OUTDIR is written. Ctrl-C or SIGTERM stops after the current module\n"
    "(exit status 130 / 143); a second Ctrl-C stops at once.\n";

int main(int argc, char **argv)
{
    cli_set_prog("llmq-gptq");
    gptq_job j = {.samples = 128, .seqlen = 2048, .block = 128};
    j.s = (export_settings){.method = "gptq", .bits = 4, .group = 128, .sym = 1, .damp = 0.01f};
    const char *device = "auto", *dtype = NULL, *format = NULL;
    int static_groups = -1, json = 0;
    double shard_gb = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            return 0;
        } else if (!strcmp(a, "--model")) {
            j.model = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--data")) {
            j.data = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--field")) {
            j.field = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "-o") || !strcmp(a, "--output")) {
            j.out = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--method")) {
            j.s.method = cli_value(argc, argv, &i);
            if (strcmp(j.s.method, "gptq") && strcmp(j.s.method, "rtn") && strcmp(j.s.method, "nf4"))
                cli_die("llmq-gptq", "--method must be gptq, rtn or nf4, not '%s'", j.s.method);
        } else if (!strcmp(a, "--bits")) {
            j.s.bits = (int)cli_long(argc, argv, &i, 1, 16);
        } else if (!strcmp(a, "--group")) {
            j.s.group = (int)cli_long(argc, argv, &i, -1, 1 << 20);
            if (j.s.group == 0)
                cli_die("llmq-gptq", "--group must be positive or -1");
        } else if (!strcmp(a, "--sym")) {
            j.s.sym = 1;
        } else if (!strcmp(a, "--asym")) {
            j.s.sym = 0;
        } else if (!strcmp(a, "--act-order")) {
            j.s.act_order = 1;
        } else if (!strcmp(a, "--static-groups")) {
            static_groups = 1;
        } else if (!strcmp(a, "--no-static-groups")) {
            static_groups = 0;
        } else if (!strcmp(a, "--true-sequential")) {
            j.s.true_sequential = 1;
        } else if (!strcmp(a, "--damp")) {
            j.s.damp = (float)cli_double(argc, argv, &i, 0.0, 10.0);
        } else if (!strcmp(a, "--block")) {
            j.block = (int)cli_long(argc, argv, &i, 1, 1 << 16);
        } else if (!strcmp(a, "--nf4-double")) {
            j.s.nf4_double = 1;
        } else if (!strcmp(a, "--samples")) {
            j.samples = (int)cli_long(argc, argv, &i, 1, 1 << 20);
        } else if (!strcmp(a, "--seqlen")) {
            j.seqlen = (int)cli_long(argc, argv, &i, 2, 1 << 20);
        } else if (!strcmp(a, "--seed")) {
            j.seed = (uint64_t)cli_long(argc, argv, &i, 0, INT64_MAX);
        } else if (!strcmp(a, "--records")) {
            j.records = 1;
        } else if (!strcmp(a, "--format")) {
            format = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--skip-unfit")) {
            j.skip_unfit = 1;
        } else if (!strcmp(a, "--shard-gb")) {
            shard_gb = cli_double(argc, argv, &i, 0.001, 1e6);
        } else if (!strcmp(a, "--device")) {
            device = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--dtype")) {
            dtype = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--cpu-solver")) {
            j.cpu_solver = 1;
        } else if (!strcmp(a, "--dump")) {
            j.dump_dir = cli_value(argc, argv, &i);
        } else if (!strcmp(a, "--force")) {
            j.force = 1;
        } else if (!strcmp(a, "--restart")) {
            j.restart = 1;
        } else if (!strcmp(a, "--no-resume")) {
            j.no_resume = 1;
        } else if (!strcmp(a, "--quiet")) {
            j.quiet = 1;
        } else if (!strcmp(a, "--json")) {
            json = 1;
        } else {
            cli_die("llmq-gptq", "unknown option '%s' (see --help)", a);
        }
    }
    if (!j.model || !j.out)
        cli_die("llmq-gptq", "--model and -o are required (see --help)");
    int is_gptq = !strcmp(j.s.method, "gptq");
    if (is_gptq && !j.data)
        cli_die("llmq-gptq", "--method gptq needs calibration data (--data CORPUS); --method rtn and nf4 do not");
    if (!strcmp(j.s.method, "nf4"))
        j.s.bits = 4, j.s.group = 64, j.s.sym = 1;
    j.s.static_groups = static_groups >= 0 ? static_groups : j.s.act_order;
    if (j.s.static_groups && j.s.group <= 0)
        j.s.static_groups = 0; /* one group per row: nothing to fix in advance */
    if (!is_gptq && (j.s.act_order || j.s.true_sequential))
        cli_die("llmq-gptq", "--act-order and --true-sequential need --method gptq");
    if (format) {
        if (export_format_parse(format, &j.format))
            cli_die("llmq-gptq", "%s", llmq_last_error());
    } else {
        j.format = !strcmp(j.s.method, "nf4") ? EXPORT_LLMQ : j.s.sym ? EXPORT_GPTQ : EXPORT_GPTQ_V2;
    }
    j.shard_bytes = (size_t)(shard_gb * 1e9);

    llmq_backend *b = NULL;
    if (is_gptq) {
        if (cli_backend("llmq-gptq", device, dtype, &b))
            return 1;
    }
    gptq_summary sum;
    int rc = gptq_run(&j, b, &sum);
    if (rc)
        llmq_print_error("llmq-gptq");
    else if (json) {
        printf("{\"output\": ");
        cli_json_string(stdout, j.out);
        printf(", \"method\": \"%s\", \"format\": \"%s\", \"modules\": %d, \"skipped\": %d, \"resumed_layers\": %d, "
               "\"seconds\": %.3f, \"forward_seconds\": %.3f, \"solve_seconds\": %.3f, \"pack_seconds\": %.3f, "
               "\"write_seconds\": %.3f}\n",
               j.s.method, export_format_name(j.format), sum.modules, sum.skipped, sum.resumed_layers, sum.seconds,
               sum.forward, sum.solve, sum.pack, sum.write);
    }
    if (b)
        b->destroy(b);
    return rc > 0 ? rc : rc ? 1 : 0; /* > 0: 128 + the signal that stopped it */
}
