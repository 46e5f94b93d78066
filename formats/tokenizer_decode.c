/* Hugging Face tokenizer.json decoding: id -> token text (added tokens
 * first), BOS / EOS skipped, then the decoder chain as HF's decode_chain
 * steps (Replace, ByteFallback, Fuse, Strip, ByteLevel, Metaspace) and a
 * plain concatenation (tokens joined by " " when the file has no decoder). */
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "tokenizer_impl.h"

/* ---- decoders ---------------------------------------------------------------------------- */

static int dec_replace(const tk_dec *d, const tk_strs *in, tk_strs *out, tk_arena *ar)
{
    for (size_t i = 0; i < in->n; i++) {
        tk_str s = in->v[i];
        size_t c = tk_count(s.s, s.len, d->a, d->alen);
        if (c) {
            char *buf = tk_arena_alloc(ar, s.len - c * d->alen + c * d->blen + 1);
            if (!buf)
                return -1;
            s.len = tk_replace_all(buf, s.s, s.len, d->a, d->alen, d->b, d->blen);
            s.s = buf;
        }
        if (tk_strs_push(out, s.s, s.len))
            return -1;
    }
    return 0;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

static int byte_token(tk_str s)
{
    if (s.len != 6 || memcmp(s.s, "<0x", 3) != 0 || s.s[5] != '>')
        return -1;
    int hi = hexval(s.s[3]), lo = hexval(s.s[4]);
    return hi < 0 || lo < 0 ? -1 : hi * 16 + lo;
}

/* Runs of <0xNN> tokens become their bytes when those form valid UTF-8,
 * else one U+FFFD per byte token (HF's ByteFallback). */
static int dec_bytefallback(const tk_strs *in, tk_strs *out, tk_arena *ar)
{
    for (size_t i = 0; i < in->n;) {
        if (byte_token(in->v[i]) < 0) {
            if (tk_strs_push(out, in->v[i].s, in->v[i].len))
                return -1;
            i++;
            continue;
        }
        size_t j = i;
        while (j < in->n && byte_token(in->v[j]) >= 0)
            j++;
        char *buf = tk_arena_alloc(ar, j - i);
        if (!buf)
            return -1;
        for (size_t k = i; k < j; k++)
            buf[k - i] = (char)byte_token(in->v[k]);
        if (tk_utf8_valid(buf, j - i)) {
            if (tk_strs_push(out, buf, j - i))
                return -1;
        } else {
            for (size_t k = i; k < j; k++)
                if (tk_strs_push(out, "\xEF\xBF\xBD", 3))
                    return -1;
        }
        i = j;
    }
    return 0;
}

static int dec_concat(const tk_strs *in, tk_strs *out, tk_arena *ar)
{
    size_t total = 0, o = 0;
    for (size_t i = 0; i < in->n; i++)
        total += in->v[i].len;
    char *buf = tk_arena_alloc(ar, total + 1);
    if (!buf)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        memcpy(buf + o, in->v[i].s, in->v[i].len);
        o += in->v[i].len;
    }
    return tk_strs_push(out, buf, o);
}

/* Strip: drop up to `start` leading and `stop` trailing copies of a char. */
static int dec_strip(const tk_dec *d, const tk_strs *in, tk_strs *out)
{
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->v[i].s;
        size_t a = 0, b = in->v[i].len;
        for (size_t k = 0; k < d->start && b - a >= d->alen && memcmp(s + a, d->a, d->alen) == 0;
             k++)
            a += d->alen;
        for (size_t k = 0;
             k < d->stop && b - a >= d->alen && memcmp(s + b - d->alen, d->a, d->alen) == 0; k++)
            b -= d->alen;
        if (tk_strs_push(out, s + a, b - a))
            return -1;
    }
    return 0;
}

/* ByteLevel: map the stand-in characters back to bytes (a token with any
 * other character is taken as its raw UTF-8), then one lossy UTF-8 string. */
static int dec_bytelevel(const tk_bytemap *bm, const tk_strs *in, tk_strs *out, tk_arena *ar)
{
    size_t total = 0, o = 0;
    for (size_t i = 0; i < in->n; i++)
        total += in->v[i].len;
    char *bytes = tk_arena_alloc(ar, total + 1), *text = tk_arena_alloc(ar, 3 * total + 1);
    if (!bytes || !text)
        return -1;
    for (size_t i = 0; i < in->n; i++) {
        const char *s = in->v[i].s;
        size_t n = in->v[i].len, start = o, k;
        for (size_t j = 0; j < n; j += k) {
            k = tk_utf8_len(s + j, n - j);
            uint32_t cp = tk_utf8_cp(s + j, k);
            if (cp >= 324 || bm->dec[cp] < 0) {
                memcpy(bytes + start, s, n);
                o = start + n;
                break;
            }
            bytes[o++] = (char)bm->dec[cp];
        }
    }
    return tk_strs_push(out, text, tk_utf8_lossy(bytes, o, text));
}

/* Metaspace: replacement -> space, except in the first token (where the
 * prepended one is dropped) unless the scheme never prepends. */
static int dec_metaspace(const tk_dec *d, const tk_strs *in, tk_strs *out, tk_arena *ar)
{
    for (size_t i = 0; i < in->n; i++) {
        tk_str s = in->v[i];
        char *buf = tk_arena_alloc(ar, s.len + 1);
        size_t o = 0;
        if (!buf)
            return -1;
        for (size_t j = 0; j < s.len;) {
            if (s.len - j >= d->alen && memcmp(s.s + j, d->a, d->alen) == 0) {
                if (i > 0 || d->prepend_scheme == TK_PREPEND_NEVER)
                    buf[o++] = ' ';
                j += d->alen;
            } else {
                buf[o++] = s.s[j++];
            }
        }
        if (tk_strs_push(out, buf, o))
            return -1;
    }
    return 0;
}

static int dec_step(const llmq_tokenizer *t, const tk_dec *d, const tk_strs *in, tk_strs *out,
                    tk_arena *ar)
{
    out->n = 0;
    switch (d->kind) {
    case TK_DEC_REPLACE:
        return dec_replace(d, in, out, ar);
    case TK_DEC_BYTEFALLBACK:
        return dec_bytefallback(in, out, ar);
    case TK_DEC_FUSE:
        return dec_concat(in, out, ar);
    case TK_DEC_STRIP:
        return dec_strip(d, in, out);
    case TK_DEC_BYTELEVEL:
        return dec_bytelevel(&t->bytemap, in, out, ar);
    default:
        return dec_metaspace(d, in, out, ar);
    }
}

static int decode_tokens(const llmq_tokenizer *t, tk_strs *a, tk_strs *b, tk_arena *ar, char **text,
                         size_t *len)
{
    for (size_t i = 0; t->has_decoder && i < t->n_dec; i++) {
        if (dec_step(t, &t->dec[i], a, b, ar))
            return llmq_fail("out of memory");
        tk_strs tmp = *a;
        *a = *b;
        *b = tmp;
    }
    size_t total = 0, o = 0, sep = t->has_decoder ? 0 : 1; /* no decoder: HF joins with " " */
    for (size_t i = 0; i < a->n; i++)
        total += a->v[i].len + sep;
    char *out = malloc(total + 1);
    if (!out)
        return llmq_fail("out of memory");
    for (size_t i = 0; i < a->n; i++) {
        if (sep && i)
            out[o++] = ' ';
        memcpy(out + o, a->v[i].s, a->v[i].len);
        o += a->v[i].len;
    }
    out[o] = 0;
    *text = out;
    *len = o;
    return 0;
}

int tok_decode(const llmq_tokenizer *t, const int32_t *ids, size_t n, char **text, size_t *len)
{
    tk_strs a = {0}, b = {0};
    tk_arena ar = {0};
    int rc = 0;
    *text = NULL;
    *len = 0;
    for (size_t i = 0; i < n && !rc; i++) {
        int32_t id = ids[i];
        if (id < 0 || id >= t->n_vocab || !t->id_tok[id].s)
            rc = llmq_fail("token id %ld is out of range (vocab size %d)", (long)id, t->n_vocab);
        else if (id != t->bos_id && id != t->eos_id &&
                 tk_strs_push(&a, t->id_tok[id].s, t->id_tok[id].len))
            rc = llmq_fail("out of memory");
    }
    if (!rc)
        rc = decode_tokens(t, &a, &b, &ar, text, len);
    free(a.v);
    free(b.v);
    tk_arena_free(&ar);
    return rc;
}
