#include "cli.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *g_prog = "llmq";

void cli_set_prog(const char *prog) { g_prog = prog; }

void cli_die(const char *prog, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "%s: error: ", prog);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    exit(2);
}

const char *cli_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc)
        cli_die(g_prog, "option %s needs a value", argv[*i]);
    return argv[++*i];
}

long cli_long(int argc, char **argv, int *i, long lo, long hi)
{
    const char *opt = argv[*i], *v = cli_value(argc, argv, i);
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || *end || end == v || x < lo || x > hi)
        cli_die(g_prog, "%s: '%s' is not an integer in [%ld, %ld]", opt, v, lo, hi);
    return x;
}

int cli_int_list(const char *opt, const char *s, int *out, int max, long lo, long hi)
{
    int n = 0;
    const char *p = s;
    do {
        char *end;
        errno = 0;
        long x = strtol(p, &end, 10);
        if (errno || end == p || x < lo || x > hi || (*end && *end != ',') || n == max)
            cli_die(g_prog, "%s: '%s' is not a list of at most %d integers in [%ld, %ld] separated by commas", opt, s,
                    max, lo, hi);
        out[n++] = (int)x;
        p = *end ? end + 1 : end;
    } while (*p);
    return n;
}

double cli_double(int argc, char **argv, int *i, double lo, double hi)
{
    const char *opt = argv[*i], *v = cli_value(argc, argv, i);
    char *end;
    errno = 0;
    double x = strtod(v, &end);
    if (errno || *end || end == v || !(x >= lo && x <= hi))
        cli_die(g_prog, "%s: '%s' is not a number in [%g, %g]", opt, v, lo, hi);
    return x;
}

int cli_backend(const char *prog, const char *device, const char *dtype, llmq_backend **out)
{
    g_prog = prog;
    int cuda;
    if (!strcmp(device, "auto"))
        cuda = llmq_cuda_available();
    else if (!strcmp(device, "cuda"))
        cuda = 1;
    else if (!strcmp(device, "cpu"))
        cuda = 0;
    else
        cli_die(prog, "--device must be cpu, cuda or auto, not '%s'", device);
    llmq_dtype dt = cuda ? LLMQ_F16 : LLMQ_F32;
    if (dtype) {
        if (!strcmp(dtype, "f32"))
            dt = LLMQ_F32;
        else if (!strcmp(dtype, "f16"))
            dt = LLMQ_F16;
        else if (!strcmp(dtype, "bf16"))
            dt = LLMQ_BF16;
        else
            cli_die(prog, "--dtype must be f32, f16 or bf16, not '%s'", dtype);
    }
    if (!cuda && dt != LLMQ_F32)
        cli_die(prog, "the CPU reference computes in f32 only; use --dtype f32 or --device cuda");
    int rc = cuda ? llmq_backend_cuda(out, 0, dt) : llmq_backend_cpu(out);
    if (rc)
        llmq_print_error(prog);
    return rc;
}

void cli_json_string(FILE *fp, const char *s)
{
    fputc('"', fp);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            fprintf(fp, "\\%c", *p);
        else if (*p < 0x20)
            fprintf(fp, "\\u%04x", *p);
        else
            fputc(*p, fp);
    }
    fputc('"', fp);
}
