/* Streaming corpus reader: plain text or JSON Lines, optionally zstd.
 *
 * Layering, bottom up:
 *   fill_chunk()  produces the next run of decoded bytes: straight from
 *                 fread() for plain files, from ZSTD_decompressStream() for
 *                 compressed ones. Memory is bounded by two fixed buffers of
 *                 the sizes zstd recommends, whatever the file size.
 *   read_line()   cuts chunks into lines in a growable buffer (a line may
 *                 span any number of chunks and zstd frames).
 *   corpus_next() turns lines into records (text: the line as is; JSONL:
 *                 the string field of the parsed object).
 *
 * Compression is decided by name (.zst) or by sniffing the zstd magic in the
 * first bytes, so a renamed or mislabelled file still reads correctly. The
 * sniffed bytes are not put back with fseek(): they stay in the input buffer
 * and become the first chunk, which also works for pipes. */
#include "corpus.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <cjson/cJSON.h>
#include <zstd.h>

#include "../src/error.h"

/* A line above this is almost certainly not text (a binary file, a whole
 * corpus without newlines); refuse it rather than exhaust memory. */
#define CORPUS_MAX_LINE ((size_t)1 << 30)

#define PLAIN_CHUNK ((size_t)1 << 17)
#define ZSTD_SLICE ((size_t)4096)

struct llmq_corpus {
    char *path;
    char *field;            /* JSONL key, owned copy */
    int jsonl;
    FILE *fp;

    /* Raw file bytes. For plain files this is also the decoded chunk. */
    unsigned char *in;
    size_t in_cap;
    ZSTD_inBuffer zin;      /* src = in; size = bytes read; pos = consumed */

    /* zstd state (ds == NULL for plain files). */
    ZSTD_DStream *ds;
    unsigned char *out;
    size_t out_cap;
    size_t zret;            /* last ZSTD_decompressStream hint; 0 = frame done */
    int out_full;           /* last call filled out: decoder may hold more */

    /* Current decoded chunk being cut into lines. */
    const char *chunk;
    size_t chunk_len, chunk_pos;
    int eof;                /* fill_chunk() reported the end */

    /* Current line, NUL-terminated. */
    char *line;
    size_t line_len, line_cap, max_line;
    long line_no;           /* lines started so far (1-based once reading) */

    cJSON *json;            /* tree of the last JSONL record (owns its text) */
    long rec_line;
    int failed;             /* sticky: once broken, stay broken */
};

/* ---- name and content detection ---------------------------------------- */

static int ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcasecmp(s + n - m, suffix) == 0;
}

static int name_is_jsonl(const char *path)
{
    static const char *const sfx[] = {".jsonl", ".jsonl.zst", ".json.zst", ".ndjson",
                                      ".ndjson.zst"};
    for (size_t i = 0; i < sizeof sfx / sizeof sfx[0]; i++)
        if (ends_with(path, sfx[i]))
            return 1;
    return 0;
}

/* Zstd frames start with 28 B5 2F FD; a stream may also begin with a
 * skippable frame (magic 0x184D2A50..5F, little endian). */
static int looks_like_zstd(const unsigned char *p, size_t n)
{
    if (n < 4)
        return 0;
    uint32_t magic = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
                     (uint32_t)p[3] << 24;
    return magic == ZSTD_MAGICNUMBER ||
           (magic & ZSTD_MAGIC_SKIPPABLE_MASK) == ZSTD_MAGIC_SKIPPABLE_START;
}

/* ---- raw input ---------------------------------------------------------- */

/* Refill c->in from the file. Returns bytes read (0 at end), -1 on error. */
static long read_raw(llmq_corpus *c)
{
    size_t n = fread(c->in, 1, c->in_cap, c->fp);
    if (n == 0 && ferror(c->fp))
        return llmq_fail("%s: read error: %s", c->path, strerror(errno ? errno : EIO));
    c->zin.size = n;
    c->zin.pos = 0;
    return (long)n;
}

/* ---- decoded chunks ----------------------------------------------------- */

static int fill_plain(llmq_corpus *c)
{
    if (c->zin.pos == c->zin.size) {
        long n = read_raw(c);
        if (n <= 0)
            return (int)n;
    }
    c->chunk = (const char *)c->in + c->zin.pos;
    c->chunk_len = c->zin.size - c->zin.pos;
    c->zin.pos = c->zin.size;
    return 1;
}

/* Decompress until some output appears. ZSTD_decompressStream may consume
 * input without producing output (headers, a frame end) and may hold output
 * back when the output buffer fills, so loop and call it again without new
 * input in the latter case. Concatenated frames need nothing special: after
 * a frame ends (return 0) the next call starts the next frame. */
static int fill_zstd(llmq_corpus *c)
{
    for (;;) {
        if (c->zin.pos == c->zin.size && !c->out_full) {
            long n = read_raw(c);
            if (n < 0)
                return -1;
            if (n == 0) {
                /* A nonzero hint at end of input means the frame wants more
                 * bytes than the file has. */
                if (c->zret != 0)
                    return llmq_fail("%s: truncated zstd stream", c->path);
                return 0;
            }
        }
        /* Feed at most ZSTD_SLICE bytes per call. Given all its input at
         * once, the decoder goes on to decode the next block after filling
         * the output, and on an error there it discards the good output of
         * the same call, so the message would name a line far before the
         * damage. Small slices keep the error close to the last good line
         * at the cost of an internal copy of the compressed bytes. */
        size_t end = c->zin.size - c->zin.pos > ZSTD_SLICE ? c->zin.pos + ZSTD_SLICE
                                                           : c->zin.size;
        ZSTD_inBuffer in = {c->in, end, c->zin.pos};
        ZSTD_outBuffer o = {c->out, c->out_cap, 0};
        size_t r = ZSTD_decompressStream(c->ds, &o, &in);
        c->zin.pos = in.pos;
        if (ZSTD_isError(r))
            return llmq_fail("%s: line %ld: corrupt zstd data: %s", c->path,
                             c->line_no + (c->line_len == 0), ZSTD_getErrorName(r));
        c->zret = r;
        c->out_full = o.pos == o.size;
        if (o.pos > 0) {
            c->chunk = (const char *)c->out;
            c->chunk_len = o.pos;
            return 1;
        }
    }
}

/* Make chunk_pos < chunk_len. Returns 1, 0 at end of data, -1 on error. */
static int fill_chunk(llmq_corpus *c)
{
    if (c->eof)
        return 0;
    c->chunk_pos = c->chunk_len = 0;
    int r = c->ds ? fill_zstd(c) : fill_plain(c);
    if (r == 0)
        c->eof = 1;
    return r;
}

/* ---- lines -------------------------------------------------------------- */

/* Append n bytes to the line, growing it geometrically up to max_line. */
static int line_append(llmq_corpus *c, const char *p, size_t n)
{
    if (n > c->max_line - c->line_len)
        return llmq_fail("%s: line %ld: line longer than %zu bytes", c->path, c->line_no,
                         c->max_line);
    size_t need = c->line_len + n + 1;
    if (need > c->line_cap) {
        size_t cap = c->line_cap ? c->line_cap : 4096;
        while (cap < need)
            cap *= 2;
        char *nl = realloc(c->line, cap);
        if (!nl)
            return llmq_fail("%s: line %ld: out of memory (%zu bytes)", c->path, c->line_no,
                             cap);
        c->line = nl;
        c->line_cap = cap;
    }
    memcpy(c->line + c->line_len, p, n);
    c->line_len += n;
    c->line[c->line_len] = 0;
    return 0;
}

/* Next line into c->line with its "\n" if it had one. Returns 1, 0 at the
 * end (no partial line left), -1 on error. */
static int read_line(llmq_corpus *c)
{
    c->line_len = 0;
    if (c->line)
        c->line[0] = 0;
    int started = 0;
    for (;;) {
        if (c->chunk_pos == c->chunk_len) {
            int r = fill_chunk(c);
            if (r < 0)
                return -1;
            if (r == 0)
                return started; /* a final line without "\n" still counts */
        }
        if (!started) {
            started = 1;
            c->line_no++;
        }
        const char *p = c->chunk + c->chunk_pos;
        size_t avail = c->chunk_len - c->chunk_pos;
        const char *nl = memchr(p, '\n', avail);
        size_t take = nl ? (size_t)(nl - p) + 1 : avail;
        if (line_append(c, p, take) < 0)
            return -1;
        c->chunk_pos += take;
        if (nl)
            return 1;
    }
}

/* ---- records ------------------------------------------------------------ */

static int is_blank(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\n')
            return 0;
    return 1;
}

/* Parse c->line as one JSON object and point *text at its string field.
 * The tree is kept until the next record so the text needs no copy. */
static int parse_jsonl(llmq_corpus *c, const char **text, size_t *len)
{
    /* Editors on Windows may start the file with a UTF-8 byte order mark,
     * which is not JSON; skip it on the first line only. */
    const char *s = c->line;
    size_t n = c->line_len;
    if (c->line_no == 1 && n >= 3 && memcmp(s, "\xEF\xBB\xBF", 3) == 0) {
        s += 3;
        n -= 3;
    }
    if (n && s[n - 1] == '\n')
        n--;
    if (n && s[n - 1] == '\r')
        n--;
    /* cJSON_ParseWithLength alone accepts trailing garbage after the value;
     * check that only whitespace follows it. Columns are 1-based bytes. */
    const char *end = NULL;
    c->json = cJSON_ParseWithLengthOpts(s, n, &end, 0);
    if (!c->json)
        return llmq_fail("%s: line %ld: invalid JSON at column %ld", c->path, c->line_no,
                         end ? (long)(end - c->line) + 1 : 1L);
    if (!is_blank(end, n - (size_t)(end - s)))
        return llmq_fail("%s: line %ld: invalid JSON: trailing data at column %ld", c->path,
                         c->line_no, (long)(end - c->line) + 1);
    if (!cJSON_IsObject(c->json))
        return llmq_fail("%s: line %ld: record is not a JSON object", c->path, c->line_no);
    const cJSON *f = cJSON_GetObjectItemCaseSensitive(c->json, c->field);
    if (!cJSON_IsString(f) || !f->valuestring)
        return llmq_fail("%s: line %ld: record has no string field '%s'", c->path,
                         c->line_no, c->field);
    /* cJSON strings are NUL-terminated, so a "\u0000" escape ends the text. */
    *text = f->valuestring;
    *len = strlen(f->valuestring);
    return 0;
}

int corpus_next(llmq_corpus *c, const char **text, size_t *len)
{
    if (c->failed)
        return llmq_fail("%s: reader used after an error", c->path);
    cJSON_Delete(c->json);
    c->json = NULL;
    for (;;) {
        int r = read_line(c);
        if (r < 0) {
            c->failed = 1;
            return -1;
        }
        if (r == 0)
            return 0;
        if (!c->jsonl) {
            *text = c->line;
            *len = c->line_len;
            break;
        }
        if (is_blank(c->line, c->line_len))
            continue;
        if (parse_jsonl(c, text, len) < 0) {
            c->failed = 1;
            return -1;
        }
        break;
    }
    c->rec_line = c->line_no;
    return 1;
}

long corpus_line(const llmq_corpus *c) { return c->rec_line; }

void corpus_set_max_line(llmq_corpus *c, size_t max_bytes)
{
    c->max_line = max_bytes ? max_bytes : CORPUS_MAX_LINE;
}

/* ---- open / close ------------------------------------------------------- */

void corpus_close(llmq_corpus *c)
{
    if (!c)
        return;
    if (c->fp)
        fclose(c->fp);
    ZSTD_freeDStream(c->ds);
    cJSON_Delete(c->json);
    free(c->in);
    free(c->out);
    free(c->line);
    free(c->field);
    free(c->path);
    free(c);
}

static int setup_zstd(llmq_corpus *c)
{
    c->ds = ZSTD_createDStream();
    c->out_cap = ZSTD_DStreamOutSize();
    c->out = malloc(c->out_cap);
    if (!c->ds || !c->out)
        return llmq_fail("%s: out of memory", c->path);
    size_t r = ZSTD_initDStream(c->ds);
    if (ZSTD_isError(r))
        return llmq_fail("%s: zstd init: %s", c->path, ZSTD_getErrorName(r));
    return 0;
}

int corpus_open(llmq_corpus **out, const char *path, llmq_corpus_kind kind, const char *field)
{
    *out = NULL;
    llmq_corpus *c = calloc(1, sizeof *c);
    if (!c)
        return llmq_fail("%s: out of memory", path);
    c->path = strdup(path);
    c->field = strdup(field ? field : "text");
    c->max_line = CORPUS_MAX_LINE;
    c->jsonl = kind == CORPUS_JSONL || (kind == CORPUS_AUTO && name_is_jsonl(path));
    /* The input buffer serves plain reads too; zstd's recommended size is a
     * good read size either way. */
    c->in_cap = ZSTD_DStreamInSize();
    if (c->in_cap < PLAIN_CHUNK)
        c->in_cap = PLAIN_CHUNK;
    c->in = malloc(c->in_cap);
    if (!c->path || !c->field || !c->in) {
        corpus_close(c);
        return llmq_fail("%s: out of memory", path);
    }
    c->zin.src = c->in;

    c->fp = fopen(path, "rb");
    if (!c->fp) {
        int e = errno;
        corpus_close(c);
        return llmq_fail("%s: cannot open: %s", path, strerror(e));
    }
    /* Read the first block now to sniff it; it stays queued as input. An
     * empty file simply yields no records. */
    if (read_raw(c) < 0) {
        corpus_close(c);
        return -1;
    }
    if (ends_with(path, ".zst") || looks_like_zstd(c->in, c->zin.size)) {
        if (setup_zstd(c) < 0) {
            corpus_close(c);
            return -1;
        }
    }
    *out = c;
    return 0;
}

/* ---- whole-corpus convenience ------------------------------------------ */

void corpus_free_records(char **records, size_t *lens, size_t count)
{
    if (records)
        for (size_t i = 0; i < count; i++)
            free(records[i]);
    free(records);
    free(lens);
}

static int push_record(char ***recs, size_t **lens, size_t *n, size_t *cap, const char *t,
                       size_t len)
{
    if (*n == *cap) {
        size_t nc = *cap ? *cap * 2 : 256;
        char **nr = realloc(*recs, nc * sizeof **recs);
        if (!nr)
            return -1;
        *recs = nr;
        size_t *nl = realloc(*lens, nc * sizeof **lens);
        if (!nl)
            return -1;
        *lens = nl;
        *cap = nc;
    }
    char *copy = malloc(len + 1);
    if (!copy)
        return -1;
    memcpy(copy, t, len);
    copy[len] = 0;
    (*recs)[*n] = copy;
    (*lens)[*n] = len;
    (*n)++;
    return 0;
}

int corpus_read_all(const char *path, llmq_corpus_kind kind, const char *field,
                    char ***records, size_t **lens, size_t *count)
{
    *records = NULL;
    if (lens)
        *lens = NULL;
    *count = 0;
    llmq_corpus *c;
    if (corpus_open(&c, path, kind, field) < 0)
        return -1;
    char **recs = NULL;
    size_t *ls = NULL, n = 0, cap = 0;
    const char *t;
    size_t len;
    int r;
    while ((r = corpus_next(c, &t, &len)) == 1) {
        if (push_record(&recs, &ls, &n, &cap, t, len) < 0) {
            r = llmq_fail("%s: line %ld: out of memory", path, corpus_line(c));
            break;
        }
    }
    corpus_close(c);
    if (r < 0) {
        corpus_free_records(recs, ls, n);
        return -1;
    }
    *records = recs;
    if (lens)
        *lens = ls;
    else
        free(ls);
    *count = n;
    return 0;
}
