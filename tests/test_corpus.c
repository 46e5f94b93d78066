/* Tests for the streaming corpus reader (formats/corpus.c).
 *
 * Real data comes from $LLMQ_TEST_DATA (default tests/data). Failure cases
 * and zstd fixtures are written at run time into a mkdtemp() directory; the
 * .zst fixtures are made with ZSTD_compress so the test needs no zstd CLI. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>
#include <zstd.h>

#include "formats/corpus.h"
#include "src/error.h"
#include "src/fileio.h"

static char g_tmp[256];
static char *g_created[64];
static int g_ncreated;

/* ---- helpers ------------------------------------------------------------ */

static char *data_path(const char *rel)
{
    const char *dir = getenv("LLMQ_TEST_DATA");
    char *p = llmq_path_join(dir && *dir ? dir : "tests/data", rel);
    assert_non_null(p);
    return p;
}

/* A path in the temporary directory, remembered for teardown. */
static const char *tmp_path(const char *name)
{
    char *p = llmq_path_join(g_tmp, name);
    assert_non_null(p);
    assert_true(g_ncreated < (int)(sizeof g_created / sizeof g_created[0]));
    g_created[g_ncreated++] = p;
    return p;
}

static const char *write_tmp(const char *name, const void *data, size_t len)
{
    const char *p = tmp_path(name);
    assert_int_equal(llmq_write_file(p, data, len), 0);
    return p;
}

static const char *write_tmp_str(const char *name, const char *s)
{
    return write_tmp(name, s, strlen(s));
}

/* One zstd frame of data, malloc'd. */
static void *zcompress(const void *data, size_t len, int level, size_t *out_len)
{
    size_t cap = ZSTD_compressBound(len);
    void *buf = malloc(cap);
    assert_non_null(buf);
    size_t n = ZSTD_compress(buf, cap, data, len, level);
    assert_false(ZSTD_isError(n));
    *out_len = n;
    return buf;
}

static const char *write_tmp_zst(const char *name, const void *data, size_t len)
{
    size_t zn;
    void *z = zcompress(data, len, 3, &zn);
    const char *p = write_tmp(name, z, zn);
    free(z);
    return p;
}

static void read_data(const char *rel, char **buf, size_t *len)
{
    char *p = data_path(rel);
    assert_int_equal(llmq_read_file(p, buf, len), 0);
    free(p);
}

/* Read all records; returns corpus_read_all's status. */
static int count_records(const char *path, llmq_corpus_kind kind, const char *field,
                         size_t *n)
{
    char **recs;
    size_t *lens;
    int rc = corpus_read_all(path, kind, field, &recs, &lens, n);
    corpus_free_records(recs, lens, *n);
    return rc;
}

/* Expect reading path to fail with a message containing path and each of
 * the given fragments (NULL-terminated list). */
static void expect_failure(const char *path, llmq_corpus_kind kind, const char *field, ...)
{
    char **recs;
    size_t *lens, n = 99;
    llmq_clear_error();
    assert_int_equal(corpus_read_all(path, kind, field, &recs, &lens, &n), -1);
    assert_null(recs);
    assert_null(lens);
    assert_int_equal(n, 0);
    const char *msg = llmq_last_error();
    if (!strstr(msg, path))
        fail_msg("message lacks path: %s", msg);
    va_list ap;
    va_start(ap, field);
    for (const char *frag; (frag = va_arg(ap, const char *));)
        if (!strstr(msg, frag))
            fail_msg("message lacks \"%s\": %s", frag, msg);
    va_end(ap);
}

/* Records of a text file must be its lines, and together the file. */
static size_t check_text_roundtrip(const char *path, const char *data, size_t len)
{
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, path, CORPUS_TEXT, NULL), 0);
    const char *t;
    size_t tl, off = 0, n = 0;
    int r;
    while ((r = corpus_next(c, &t, &tl)) == 1) {
        n++;
        assert_int_equal(corpus_line(c), (long)n);
        assert_true(tl > 0);
        assert_true(off + tl <= len);
        assert_memory_equal(t, data + off, tl);
        assert_int_equal(t[tl], 0);
        /* Only the last character may be "\n". */
        const char *nl = memchr(t, '\n', tl);
        assert_true(nl == NULL || nl == t + tl - 1);
        if (!nl)
            assert_int_equal(off + tl, len);
        off += tl;
    }
    assert_int_equal(r, 0);
    assert_int_equal(off, len);
    assert_int_equal(corpus_next(c, &t, &tl), 0); /* end is sticky */
    corpus_close(c);
    return n;
}

/* wc -l plus a final line without "\n". */
static size_t count_lines(const char *data, size_t len)
{
    size_t n = 0;
    for (size_t i = 0; i < len; i++)
        n += data[i] == '\n';
    if (len && data[len - 1] != '\n')
        n++;
    return n;
}

/* ---- fixtures ----------------------------------------------------------- */

static int setup(void **state)
{
    (void)state;
    const char *base = getenv("TMPDIR");
    snprintf(g_tmp, sizeof g_tmp, "%s/llmq_corpus_XXXXXX", base && *base ? base : "/tmp");
    return mkdtemp(g_tmp) ? 0 : -1;
}

static int teardown(void **state)
{
    (void)state;
    for (int i = 0; i < g_ncreated; i++) {
        unlink(g_created[i]);
        free(g_created[i]);
    }
    g_ncreated = 0;
    return rmdir(g_tmp);
}

/* ---- real data ---------------------------------------------------------- */

static void test_calib_jsonl_and_zst(void **state)
{
    (void)state;
    char *pj = data_path("text/tinystories/calib.jsonl");
    char *pz = data_path("text/tinystories/calib.jsonl.zst");
    char **rj, **rz;
    size_t *lj, *lz, nj, nz;
    assert_int_equal(corpus_read_all(pj, CORPUS_AUTO, NULL, &rj, &lj, &nj), 0);
    assert_int_equal(corpus_read_all(pz, CORPUS_AUTO, NULL, &rz, &lz, &nz), 0);
    assert_int_equal(nj, 538);
    assert_int_equal(nz, 538);
    for (size_t i = 0; i < nj; i++) {
        assert_true(lj[i] > 0);
        assert_int_equal(lj[i], strlen(rj[i]));
        assert_int_equal(lj[i], lz[i]);
        assert_memory_equal(rj[i], rz[i], lj[i]);
    }
    /* The JSON escapes were decoded: stories contain real newlines. */
    int newlines = 0;
    for (size_t i = 0; i < nj; i++)
        newlines += strchr(rj[i], '\n') != NULL;
    assert_true(newlines > 0);

    /* Streaming gives the same records, one per line. */
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, pz, CORPUS_AUTO, NULL), 0);
    const char *t;
    size_t tl, i = 0;
    while (corpus_next(c, &t, &tl) == 1) {
        assert_true(i < nj);
        assert_int_equal(corpus_line(c), (long)(i + 1));
        assert_int_equal(tl, lj[i]);
        assert_memory_equal(t, rj[i], tl);
        i++;
    }
    assert_int_equal(i, nj);
    corpus_close(c);

    corpus_free_records(rj, lj, nj);
    corpus_free_records(rz, lz, nz);
    free(pj);
    free(pz);
}

static void test_eval_txt(void **state)
{
    (void)state;
    char *data;
    size_t len;
    read_data("text/tinystories/eval.txt", &data, &len);
    char *p = data_path("text/tinystories/eval.txt");
    size_t n = check_text_roundtrip(p, data, len);
    assert_int_equal(n, count_lines(data, len));
    size_t m;
    assert_int_equal(count_records(p, CORPUS_AUTO, NULL, &m), 0);
    assert_int_equal(m, n);
    free(p);
    free(data);
}

static void test_wikitext(void **state)
{
    (void)state;
    char *data;
    size_t len;
    read_data("text/wikitext2/wiki.test.raw", &data, &len);
    char *p = data_path("text/wikitext2/wiki.test.raw");
    assert_int_equal(check_text_roundtrip(p, data, len), 4358);
    free(p);

    /* The same through zstd, in several frames that split lines, behind a
     * skippable frame and without a .zst name: only the magic says zstd. */
    size_t cuts[] = {0, len / 3 + 7, len / 2 + 1, len};
    unsigned char skip[12] = {0x50, 0x2A, 0x4D, 0x18, 4, 0, 0, 0, 'l', 'l', 'm', 'q'};
    size_t cap = sizeof skip + ZSTD_compressBound(len) + 64, zn = sizeof skip;
    unsigned char *z = malloc(cap);
    assert_non_null(z);
    memcpy(z, skip, sizeof skip);
    for (int i = 0; i < 3; i++) {
        size_t r = ZSTD_compress(z + zn, cap - zn, data + cuts[i], cuts[i + 1] - cuts[i], 1);
        assert_false(ZSTD_isError(r));
        zn += r;
    }
    const char *pz = write_tmp("wiki_frames.bin", z, zn);
    assert_int_equal(check_text_roundtrip(pz, data, len), 4358);
    free(z);
    free(data);
}

/* ---- text details ------------------------------------------------------- */

static void test_text_crlf_and_unterminated(void **state)
{
    (void)state;
    const char *p = write_tmp_str("crlf.txt", "a\r\nbb\r\n\nccc");
    char **r;
    size_t *l, n;
    assert_int_equal(corpus_read_all(p, CORPUS_AUTO, NULL, &r, &l, &n), 0);
    assert_int_equal(n, 4);
    assert_string_equal(r[0], "a\r\n");
    assert_string_equal(r[1], "bb\r\n");
    assert_string_equal(r[2], "\n");
    assert_string_equal(r[3], "ccc");
    assert_int_equal(l[3], 3);
    corpus_free_records(r, l, n);

    /* lens is optional. */
    assert_int_equal(corpus_read_all(p, CORPUS_TEXT, NULL, &r, NULL, &n), 0);
    assert_int_equal(n, 4);
    corpus_free_records(r, NULL, n);
}

static void test_empty_files(void **state)
{
    (void)state;
    size_t zn;
    void *z = zcompress("", 0, 3, &zn);
    const char *paths[] = {
        write_tmp_str("empty.txt", ""),
        write_tmp_str("empty.jsonl", ""),
        write_tmp_str("empty.txt.zst", ""),
        write_tmp("empty_frame.jsonl.zst", z, zn),
        write_tmp_str("blank.jsonl", "\n  \n\r\n"),
    };
    free(z);
    for (size_t i = 0; i < sizeof paths / sizeof paths[0]; i++) {
        llmq_corpus *c;
        assert_int_equal(corpus_open(&c, paths[i], CORPUS_AUTO, NULL), 0);
        const char *t;
        size_t tl;
        assert_int_equal(corpus_next(c, &t, &tl), 0);
        assert_int_equal(corpus_next(c, &t, &tl), 0);
        corpus_close(c);
        char **r;
        size_t *l, n = 7;
        assert_int_equal(corpus_read_all(paths[i], CORPUS_AUTO, NULL, &r, &l, &n), 0);
        assert_int_equal(n, 0);
        corpus_free_records(r, l, n);
    }
}

static void test_long_line(void **state)
{
    (void)state;
    const size_t big = 10u << 20;
    char *buf = malloc(big + 64);
    assert_non_null(buf);
    for (size_t i = 0; i < big; i++)
        buf[i] = (char)('a' + i % 26);
    memcpy(buf + big, "\nend", 5);
    size_t len = big + 4;

    const char *pt = write_tmp("long.txt", buf, len);
    const char *pz = write_tmp_zst("long.txt.zst", buf, len);
    const char *paths[] = {pt, pz};
    for (int k = 0; k < 2; k++) {
        char **r;
        size_t *l, n;
        assert_int_equal(corpus_read_all(paths[k], CORPUS_AUTO, NULL, &r, &l, &n), 0);
        assert_int_equal(n, 2);
        assert_int_equal(l[0], big + 1);
        assert_memory_equal(r[0], buf, big + 1);
        assert_string_equal(r[1], "end");
        corpus_free_records(r, l, n);
    }

    /* The same as one JSON string. */
    char *js = malloc(big + 64);
    assert_non_null(js);
    memcpy(js, "{\"text\": \"", 10);
    memcpy(js + 10, buf, big);
    memcpy(js + 10 + big, "\"}\n", 4);
    const char *pj = write_tmp("long.jsonl", js, big + 13);
    char **r;
    size_t *l, n;
    assert_int_equal(corpus_read_all(pj, CORPUS_AUTO, NULL, &r, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_int_equal(l[0], big);
    assert_memory_equal(r[0], buf, big);
    corpus_free_records(r, l, n);
    free(js);
    free(buf);
}

static void test_line_cap(void **state)
{
    (void)state;
    char buf[5000 + 16];
    memcpy(buf, "short\n", 6);
    memset(buf + 6, 'x', 5000);
    buf[5006] = '\n';
    const char *p = write_tmp("cap.txt", buf, 5007);
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, p, CORPUS_TEXT, NULL), 0);
    corpus_set_max_line(c, 1000);
    const char *t;
    size_t tl;
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_string_equal(t, "short\n");
    assert_int_equal(corpus_next(c, &t, &tl), -1);
    const char *msg = llmq_last_error();
    assert_non_null(strstr(msg, p));
    assert_non_null(strstr(msg, "line 2"));
    assert_non_null(strstr(msg, "longer than 1000"));
    assert_int_equal(corpus_next(c, &t, &tl), -1); /* failure is sticky */
    corpus_close(c);

    /* A line of exactly the cap is fine. */
    assert_int_equal(corpus_open(&c, p, CORPUS_TEXT, NULL), 0);
    corpus_set_max_line(c, 5001);
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_int_equal(tl, 5001);
    assert_int_equal(corpus_next(c, &t, &tl), 0);
    corpus_close(c);
}

/* ---- JSONL details ------------------------------------------------------ */

static void test_jsonl_blank_lines_and_crlf(void **state)
{
    (void)state;
    const char *p = write_tmp_str("blanks.jsonl", "\n{\"text\": \"a\"}\n   \n\r\n"
                                                  "{\"text\": \"b\\n\"}\r\n\t\n"
                                                  "{\"text\": \"\"}");
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, p, CORPUS_AUTO, NULL), 0);
    const char *t;
    size_t tl;
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_string_equal(t, "a");
    assert_int_equal(corpus_line(c), 2);
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_string_equal(t, "b\n");
    assert_int_equal(tl, 2);
    assert_int_equal(corpus_line(c), 5);
    assert_int_equal(corpus_next(c, &t, &tl), 1); /* empty string is a record */
    assert_int_equal(tl, 0);
    assert_int_equal(corpus_line(c), 7);
    assert_int_equal(corpus_next(c, &t, &tl), 0);
    corpus_close(c);
}

static void test_jsonl_unicode(void **state)
{
    (void)state;
    /* A surrogate pair (U+1F600), a BMP escape, raw UTF-8 and the usual
     * escapes; the file also starts with a UTF-8 byte order mark. */
    const char *p = write_tmp_str("uni.jsonl", "\xEF\xBB\xBF{\"text\": \"\\ud83d\\ude00 caf\\u00e9 "
                                               "\xE2\x82\xAC \\\"q\\\"\\t\\\\\"}\n");
    char **r;
    size_t *l, n;
    assert_int_equal(corpus_read_all(p, CORPUS_AUTO, NULL, &r, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(r[0], "\xF0\x9F\x98\x80 caf\xC3\xA9 \xE2\x82\xAC \"q\"\t\\");
    corpus_free_records(r, l, n);

    /* A lone surrogate is not text; cJSON rejects it. */
    const char *lone = write_tmp_str("lone.jsonl", "{\"text\": \"\\ud83d x\"}\n");
    expect_failure(lone, CORPUS_AUTO, NULL, "line 1", "invalid JSON", NULL);
}

static void test_jsonl_custom_field(void **state)
{
    (void)state;
    const char *p = write_tmp_str("field.jsonl", "{\"content\": \"hello\", \"text\": 5}\n"
                                                 "{\"text\": \"t\", \"content\": \"world\"}\n");
    char **r;
    size_t *l, n;
    assert_int_equal(corpus_read_all(p, CORPUS_AUTO, "content", &r, &l, &n), 0);
    assert_int_equal(n, 2);
    assert_string_equal(r[0], "hello");
    assert_string_equal(r[1], "world");
    corpus_free_records(r, l, n);
    /* With the default field, line 1's number is an error. */
    expect_failure(p, CORPUS_AUTO, NULL, "line 1", "record has no string field 'text'", NULL);
    expect_failure(p, CORPUS_AUTO, "body", "line 1", "no string field 'body'", NULL);
}

static void test_jsonl_errors(void **state)
{
    (void)state;
    const char *ok2 = "{\"text\": \"one\"}\n{\"text\": \"two\"}\n";
    char buf[256];

    snprintf(buf, sizeof buf, "%s{\"text\": \"three\"\n{\"text\": \"four\"}\n", ok2);
    const char *p = write_tmp_str("bad3.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "invalid JSON", NULL);
    /* Streaming returns the good records before the error. */
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, p, CORPUS_AUTO, NULL), 0);
    const char *t;
    size_t tl;
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_int_equal(corpus_next(c, &t, &tl), 1);
    assert_string_equal(t, "two");
    assert_int_equal(corpus_line(c), 2);
    assert_int_equal(corpus_next(c, &t, &tl), -1);
    assert_int_equal(corpus_line(c), 2);
    corpus_close(c);

    snprintf(buf, sizeof buf, "%s{\"body\": \"x\"}\n", ok2);
    p = write_tmp_str("nofield.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "record has no string field 'text'", NULL);

    snprintf(buf, sizeof buf, "%s{\"text\": 42}\n", ok2);
    p = write_tmp_str("number.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "record has no string field 'text'", NULL);

    snprintf(buf, sizeof buf, "%s{\"text\": null}\n", ok2);
    p = write_tmp_str("null.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "record has no string field 'text'", NULL);

    snprintf(buf, sizeof buf, "%s[\"text\", \"x\"]\n", ok2);
    p = write_tmp_str("array.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "not a JSON object", NULL);

    p = write_tmp_str("string.ndjson", "\"just a string\"\n");
    expect_failure(p, CORPUS_AUTO, NULL, "line 1", "not a JSON object", NULL);

    snprintf(buf, sizeof buf, "%s{\"text\": \"a\"} trailing\n", ok2);
    p = write_tmp_str("trailing.jsonl", buf);
    expect_failure(p, CORPUS_AUTO, NULL, "line 3", "invalid JSON", NULL);

    /* Plain text read as JSONL by request. */
    p = write_tmp_str("prose.txt", "Once upon a time\n");
    expect_failure(p, CORPUS_JSONL, NULL, "line 1", "invalid JSON", NULL);
}

static void test_kind_selection(void **state)
{
    (void)state;
    const char *line = "{\"text\": \"x\"}\n";
    /* TEXT on a .jsonl gives the raw line. */
    const char *pj = write_tmp_str("kind.jsonl", line);
    char **r;
    size_t *l, n;
    assert_int_equal(corpus_read_all(pj, CORPUS_TEXT, NULL, &r, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(r[0], line);
    corpus_free_records(r, l, n);

    /* Names that mean JSONL, compressed or not; a .json.zst and a misnamed
     * compressed .jsonl are found by suffix and by magic. */
    const char *names[] = {"k.json.zst", "k.ndjson.zst", "k.jsonl.zst", "k.JSONL", "k_zst.jsonl"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++) {
        const char *p = strstr(names[i], ".zst") || strstr(names[i], "_zst")
                            ? write_tmp_zst(names[i], line, strlen(line))
                            : write_tmp_str(names[i], line);
        assert_int_equal(corpus_read_all(p, CORPUS_AUTO, NULL, &r, &l, &n), 0);
        assert_int_equal(n, 1);
        assert_string_equal(r[0], "x");
        corpus_free_records(r, l, n);
    }

    /* .txt.zst is compressed text. */
    const char *pt = write_tmp_zst("kind.txt.zst", line, strlen(line));
    assert_int_equal(corpus_read_all(pt, CORPUS_AUTO, NULL, &r, &l, &n), 0);
    assert_int_equal(n, 1);
    assert_string_equal(r[0], line);
    corpus_free_records(r, l, n);
}

/* ---- zstd failures ------------------------------------------------------ */

static void test_corrupt_zstd(void **state)
{
    (void)state;
    char *z;
    size_t zn;
    read_data("text/tinystories/calib.jsonl.zst", &z, &zn);
    for (size_t i = zn / 2; i < zn / 2 + 64; i++)
        z[i] ^= 0x5A;
    const char *p = write_tmp("corrupt.jsonl.zst", z, zn);
    /* Read as text so that garbage that decodes is not caught as bad JSON
     * first; the frame checksum guarantees zstd notices. */
    expect_failure(p, CORPUS_TEXT, NULL, "line ", "corrupt zstd data", NULL);
    /* The damage is mid-file: the lines before it stream out first, and the
     * error names a line past them. */
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, p, CORPUS_TEXT, NULL), 0);
    const char *t;
    size_t tl;
    int r;
    long n = 0;
    while ((r = corpus_next(c, &t, &tl)) == 1)
        n++;
    assert_int_equal(r, -1);
    assert_true(n > 0);
    char want[32];
    snprintf(want, sizeof want, "line %ld:", n + 1);
    if (!strstr(llmq_last_error(), want))
        fail_msg("expected \"%s\" in: %s", want, llmq_last_error());
    corpus_close(c);

    /* A .zst name on data that is not zstd at all. */
    const char *q = write_tmp_str("notzstd.txt.zst", "hello\n");
    expect_failure(q, CORPUS_AUTO, NULL, "line 1", "corrupt zstd data", NULL);
    free(z);
}

static void test_truncated_zstd(void **state)
{
    (void)state;
    char *z;
    size_t zn;
    read_data("text/tinystories/calib.jsonl.zst", &z, &zn);
    const char *p = write_tmp("half.jsonl.zst", z, zn / 2);
    llmq_corpus *c;
    assert_int_equal(corpus_open(&c, p, CORPUS_AUTO, NULL), 0);
    const char *t;
    size_t tl;
    int r, n = 0;
    while ((r = corpus_next(c, &t, &tl)) == 1)
        n++;
    assert_int_equal(r, -1);
    assert_true(n > 0); /* the intact part was streamed out first */
    const char *msg = llmq_last_error();
    assert_non_null(strstr(msg, p));
    assert_non_null(strstr(msg, "truncated zstd stream"));
    corpus_close(c);

    /* Cut just before the end of a small frame (inside the block). */
    const char *text = "alpha\nbeta\n";
    size_t sn;
    void *s = zcompress(text, strlen(text), 3, &sn);
    const char *q = write_tmp("cut.txt.zst", s, sn - 2);
    expect_failure(q, CORPUS_AUTO, NULL, "truncated zstd stream", NULL);
    free(s);
    free(z);
}

/* ---- opening ------------------------------------------------------------ */

static void test_missing_file(void **state)
{
    (void)state;
    const char *p = tmp_path("does-not-exist.jsonl");
    llmq_corpus *c = (llmq_corpus *)1;
    llmq_clear_error();
    assert_int_equal(corpus_open(&c, p, CORPUS_AUTO, NULL), -1);
    assert_null(c);
    assert_non_null(strstr(llmq_last_error(), p));
    assert_non_null(strstr(llmq_last_error(), "No such file"));
    expect_failure(p, CORPUS_AUTO, NULL, NULL);
    expect_failure(g_tmp, CORPUS_AUTO, NULL, NULL); /* a directory */
    corpus_close(NULL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_calib_jsonl_and_zst),
        cmocka_unit_test(test_eval_txt),
        cmocka_unit_test(test_wikitext),
        cmocka_unit_test(test_text_crlf_and_unterminated),
        cmocka_unit_test(test_empty_files),
        cmocka_unit_test(test_long_line),
        cmocka_unit_test(test_line_cap),
        cmocka_unit_test(test_jsonl_blank_lines_and_crlf),
        cmocka_unit_test(test_jsonl_unicode),
        cmocka_unit_test(test_jsonl_custom_field),
        cmocka_unit_test(test_jsonl_errors),
        cmocka_unit_test(test_kind_selection),
        cmocka_unit_test(test_corrupt_zstd),
        cmocka_unit_test(test_truncated_zstd),
        cmocka_unit_test(test_missing_file),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
