/* llmq-tokenize: encode text to token ids, or decode ids to text, with a
 * Hugging Face tokenizer.json (formats/tokenizer.h). Meant for checking the
 * tokenizer against HF's on real text, and for shell pipelines. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../formats/tokenizer.h"
#include "../error.h"
#include "../fileio.h"

static const char *PROG = "llmq-tokenize";

static const char *USAGE =
    "usage: llmq-tokenize --model DIR [--no-bos] [--whole] [--decode] [FILE|-]\n"
    "\n"
    "Encodes text with the Hugging Face tokenizer of DIR (tokenizer.json, and\n"
    "tokenizer_config.json if present), exactly as HF tokenizers' encode does.\n"
    "Each input line (without its \"\\n\") is encoded on its own and printed as one\n"
    "line of space-separated ids.\n"
    "\n"
    "  --model DIR   directory holding tokenizer.json\n"
    "  --no-bos      never prepend BOS (default: when tokenizer_config.json's\n"
    "                add_bos_token, or else the post-processor, asks for it)\n"
    "  --whole       encode the whole input as one text, newlines included:\n"
    "                one output line (with --decode: all ids form one sequence)\n"
    "  --decode      input lines are space-separated ids; print each line's text\n"
    "                (BOS / EOS skipped) followed by \"\\n\"\n"
    "  FILE          input (default or '-': standard input)\n";

typedef struct {
    int no_bos, whole, decode;
    const char *model, *input;
} opts;

static void usage_error(const char *msg, const char *arg)
{
    fprintf(stderr, "%s: error: %s%s\n%s", PROG, msg, arg ? arg : "", USAGE);
    exit(2);
}

static void parse_args(int argc, char **argv, opts *o)
{
    memset(o, 0, sizeof *o);
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            fputs(USAGE, stdout);
            exit(0);
        } else if (!strcmp(a, "--model")) {
            if (i + 1 >= argc)
                usage_error("--model needs a directory", NULL);
            o->model = argv[++i];
        } else if (!strcmp(a, "--no-bos")) {
            o->no_bos = 1;
        } else if (!strcmp(a, "--whole")) {
            o->whole = 1;
        } else if (!strcmp(a, "--decode")) {
            o->decode = 1;
        } else if (a[0] == '-' && a[1]) {
            usage_error("unknown option ", a);
        } else if (o->input) {
            usage_error("more than one input file: ", a);
        } else {
            o->input = a;
        }
    }
    if (!o->model)
        usage_error("--model DIR is required", NULL);
}

static int read_stdin(char **data, size_t *len)
{
    size_t n = 0, cap = 1 << 16;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, stdin);
        if (n + 1 < cap)
            break;
        char *nb = realloc(buf, cap *= 2);
        if (!nb)
            free(buf);
        buf = nb;
    }
    if (!buf)
        return llmq_fail("standard input: out of memory");
    if (ferror(stdin)) {
        free(buf);
        return llmq_fail("standard input: read error");
    }
    buf[n] = 0;
    *data = buf;
    *len = n;
    return 0;
}

static int read_input(const char *path, char **data, size_t *len)
{
    if (!path || !strcmp(path, "-"))
        return read_stdin(data, len);
    return llmq_read_file(path, data, len);
}

/* Lines of data: each without its "\n"; a final "\n" does not start one
 * more line. Returns 1 and advances *pos while lines remain. */
static int next_line(const char *data, size_t len, size_t *pos, const char **line, size_t *n)
{
    if (*pos >= len)
        return 0;
    const char *p = data + *pos, *nl = memchr(p, '\n', len - *pos);
    *line = p;
    *n = nl ? (size_t)(nl - p) : len - *pos;
    *pos += *n + 1;
    return 1;
}

static void print_ids(const int32_t *ids, size_t n)
{
    for (size_t i = 0; i < n; i++)
        printf(i ? " %d" : "%d", ids[i]);
    putchar('\n');
}

static int encode_text(const llmq_tokenizer *t, const char *s, size_t n, int bos, size_t lineno)
{
    int32_t *ids;
    size_t m;
    if (tok_encode(t, s, n, bos, &ids, &m))
        return lineno ? llmq_wrap("line %zu", lineno) : -1;
    print_ids(ids, m);
    free(ids);
    return 0;
}

static int encode_all(const llmq_tokenizer *t, const char *data, size_t len, const opts *o)
{
    int bos = !o->no_bos && tok_add_bos(t);
    if (o->whole)
        return encode_text(t, data, len, bos, 0);
    const char *line;
    size_t n, pos = 0, lineno = 0;
    while (next_line(data, len, &pos, &line, &n))
        if (encode_text(t, line, n, bos, ++lineno))
            return -1;
    return 0;
}

typedef struct {
    int32_t *v;
    size_t n, cap;
} idvec;

/* Append the ids of one input line, checking each is a number in range. */
static int parse_ids(const llmq_tokenizer *t, const char *line, size_t n, size_t lineno, idvec *out)
{
    char *copy = strndup(line, n);
    if (!copy)
        return llmq_fail("out of memory");
    int rc = 0;
    for (char *save = NULL, *tok = strtok_r(copy, " \t\r", &save); tok && !rc;
         tok = strtok_r(NULL, " \t\r", &save)) {
        char *end;
        errno = 0;
        long id = strtol(tok, &end, 10);
        if (*end || end == tok || errno == ERANGE)
            rc = llmq_fail("line %zu: \"%s\" is not a token id", lineno, tok);
        else if (id < 0 || id >= tok_vocab_size(t))
            rc = llmq_fail("line %zu: token id %ld is out of range (vocab size %d)", lineno, id,
                           tok_vocab_size(t));
        else if (out->n == out->cap) {
            size_t nc = out->cap ? 2 * out->cap : 256;
            int32_t *nv = realloc(out->v, nc * sizeof *nv);
            if (!nv)
                rc = llmq_fail("out of memory");
            else {
                out->v = nv;
                out->cap = nc;
            }
        }
        if (!rc)
            out->v[out->n++] = (int32_t)id;
    }
    free(copy);
    return rc;
}

static int decode_ids(const llmq_tokenizer *t, const idvec *ids, size_t lineno)
{
    char *text;
    size_t len;
    if (tok_decode(t, ids->v, ids->n, &text, &len))
        return lineno ? llmq_wrap("line %zu", lineno) : -1;
    fwrite(text, 1, len, stdout);
    putchar('\n');
    free(text);
    return 0;
}

static int decode_all(const llmq_tokenizer *t, const char *data, size_t len, const opts *o)
{
    idvec ids = {0};
    const char *line;
    size_t n, pos = 0, lineno = 0;
    int rc = 0;
    while (!rc && next_line(data, len, &pos, &line, &n)) {
        if (!o->whole)
            ids.n = 0;
        rc = parse_ids(t, line, n, ++lineno, &ids);
        if (!rc && !o->whole)
            rc = decode_ids(t, &ids, lineno);
    }
    if (!rc && o->whole)
        rc = decode_ids(t, &ids, 0);
    free(ids.v);
    return rc;
}

int main(int argc, char **argv)
{
    opts o;
    parse_args(argc, argv, &o);
    char *data = NULL;
    size_t len = 0;
    llmq_tokenizer *t = NULL;
    int rc = read_input(o.input, &data, &len);
    if (!rc)
        rc = tok_load(&t, o.model);
    if (!rc)
        rc = o.decode ? decode_all(t, data, len, &o) : encode_all(t, data, len, &o);
    if (!rc && (fflush(stdout) || ferror(stdout)))
        rc = llmq_fail("standard output: write error");
    tok_free(t);
    free(data);
    if (rc) {
        llmq_print_error(PROG);
        return 1;
    }
    return 0;
}
