/* Small helpers shared by the llmq command-line tools. */
#ifndef LLMQ_CLI_H
#define LLMQ_CLI_H

#include <stdio.h>

#include "../backend.h"
#include "../error.h"

/* The program name used in messages (set first thing in main). */
void cli_set_prog(const char *prog);
/* Print "prog: error: ..." and exit(2) (usage errors). */
void cli_die(const char *prog, const char *fmt, ...) LLMQ_PRINTF(2, 3);
/* The value after option argv[*i] (advances *i), or die. */
const char *cli_value(int argc, char **argv, int *i);
/* An integer value in [lo, hi], or die naming the option. */
long cli_long(int argc, char **argv, int *i, long lo, long hi);
double cli_double(int argc, char **argv, int *i, double lo, double hi);
/* s = "a,b,c": up to max integers in [lo, hi] into out; their count, or die
 * naming opt. */
int cli_int_list(const char *opt, const char *s, int *out, int max, long lo, long hi);
/* s as a JSON string literal (quotes, escapes) on fp. */
void cli_json_string(FILE *fp, const char *s);
/* Backend from --device (cpu|cuda|auto) and --dtype (f32|f16|bf16|NULL). */
int cli_backend(const char *prog, const char *device, const char *dtype, llmq_backend **out);

#endif
