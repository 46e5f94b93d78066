/* Hugging Face tokenizer.json, BPE: the encode pipeline.
 *
 * encode, as HF's Tokenizer::encode (one sequence, no post-processor except
 * the optional BOS):
 *   1. split the raw text on added tokens whose "normalized" is false;
 *   2. normalize every other piece (Prepend / Replace / NFC / NFD / NFKC /
 *      NFKD), then split those on the added tokens whose "normalized" is
 *      true (their content was normalized the same way at load);
 *   3. run the pre-tokenizers over the remaining pieces (Split, ByteLevel,
 *      Metaspace, Digits);
 *   4. BPE each resulting pre-token (tokenizer_bpe.c).
 * Decoding is in tokenizer_decode.c, loading in tokenizer_load.c. */
#include <stdlib.h>
#include <string.h>
/* Unicode normalization forms come from GNU libunistring's u8_normalize
 * (Debian package libunistring-dev): a well-kept library (a GNU project,
 * maintained for over a decade, used by GnuTLS and libidn2) whose
 * composition / decomposition tables follow Unicode releases, which tables
 * written out here would not. */
#include <uninorm.h>

#include "../src/error.h"
#include "tokenizer_impl.h"

int tok_vocab_size(const llmq_tokenizer *t) { return t->n_vocab; }
int tok_bos_id(const llmq_tokenizer *t) { return t->bos_id; }
int tok_eos_id(const llmq_tokenizer *t) { return t->eos_id; }
int tok_add_bos(const llmq_tokenizer *t) { return t->add_bos; }

/* ---- normalizer ------------------------------------------------------------------ */

static int append(char **buf, size_t *len, size_t *cap, const void *s, size_t n)
{
    if (*len + n > *cap) {
        size_t nc = *cap ? *cap : 256;
        while (nc < *len + n)
            nc *= 2;
        char *nb = realloc(*buf, nc);
        if (!nb)
            return -1;
        *buf = nb;
        *cap = nc;
    }
    memcpy(*buf + *len, s, n);
    *len += n;
    return 0;
}

/* One Unicode normalization form over s, as HF's NFC / NFD / NFKC / NFKD
 * normalizers (the whole piece at once, so a combining mark composes with
 * the character before it whatever the pre-tokenizer later does). HF only
 * sees valid UTF-8; llmq encodes invalid bytes too (tokenizer.h), so each
 * maximal valid run is normalized on its own and the invalid bytes between
 * them are kept as they are (u8_normalize would turn them into U+FFFD). */
static int unicode_form(int kind, const char *s, size_t n, tk_arena *ar, const char **out,
                        size_t *out_len)
{
    uninorm_t nf = kind == TK_NORM_NFC    ? UNINORM_NFC
                   : kind == TK_NORM_NFD  ? UNINORM_NFD
                   : kind == TK_NORM_NFKC ? UNINORM_NFKC
                                          : UNINORM_NFKD;
    size_t i = 0;
    while (i < n && (unsigned char)s[i] < 0x80)
        i++;
    if (i == n) { /* ASCII is invariant under every form */
        *out = s;
        *out_len = n;
        return 0;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    for (i = 0; i < n;) {
        size_t j = i, k;
        while (j < n && ((k = tk_utf8_len(s + j, n - j)) > 1 || (unsigned char)s[j] < 0x80))
            j += k;
        if (j > i) {
            size_t rl = 0;
            uint8_t *r = u8_normalize(nf, (const uint8_t *)s + i, j - i, NULL, &rl);
            int rc = r ? append(&buf, &len, &cap, r, rl) : -1;
            free(r);
            if (rc) {
                free(buf);
                return -1;
            }
        }
        for (i = j; i < n && tk_utf8_len(s + i, n - i) == 1 && (unsigned char)s[i] >= 0x80; i++)
            if (append(&buf, &len, &cap, s + i, 1)) {
                free(buf);
                return -1;
            }
    }
    char *dst = tk_arena_alloc(ar, len ? len : 1);
    if (dst)
        memcpy(dst, buf, len);
    free(buf);
    if (!dst)
        return -1;
    *out = dst;
    *out_len = len;
    return 0;
}

int tk_normalize(const llmq_tokenizer *t, const char *s, size_t n, tk_arena *ar, const char **out,
                 size_t *out_len)
{
    for (size_t i = 0; i < t->n_norm; i++) {
        const tk_norm *st = &t->norm[i];
        char *buf;
        if (st->kind >= TK_NORM_NFC) {
            if (unicode_form(st->kind, s, n, ar, &s, &n))
                return -1;
            continue;
        } else if (st->kind == TK_NORM_PREPEND) {
            if (n == 0) /* HF prepends only to non-empty text */
                continue;
            if (!(buf = tk_arena_alloc(ar, n + st->alen)))
                return -1;
            memcpy(buf, st->a, st->alen);
            memcpy(buf + st->alen, s, n);
            n += st->alen;
        } else {
            size_t c = tk_count(s, n, st->a, st->alen);
            if (c == 0)
                continue;
            if (!(buf = tk_arena_alloc(ar, n - c * st->alen + c * st->blen)))
                return -1;
            n = tk_replace_all(buf, s, n, st->a, st->alen, st->b, st->blen);
        }
        s = buf;
    }
    *out = s;
    *out_len = n;
    return 0;
}

/* ---- encode state ------------------------------------------------------------------ */

typedef struct {
    const char *s;
    size_t len;
    int origin0; /* starts at offset 0 of the original text (Metaspace "first") */
} piece_t;

typedef struct {
    piece_t *v;
    size_t n, cap;
} pieces_t;

typedef struct {
    size_t a, b;
    int m; /* is a match of the split pattern */
} span_t;

typedef struct {
    span_t *v;
    size_t n, cap;
} spans_t;

typedef struct {
    const llmq_tokenizer *t;
    tk_ids ids;
    tk_arena ar;
    pieces_t cur, next;
    spans_t spans, out;
    tk_bpe_scratch bpe;
    pcre2_match_data *md;
    pcre2_match_context *mc;
    pcre2_jit_stack *js;
} enc_t;

static int oom(void) { return llmq_fail("out of memory"); }

static int piece_push(pieces_t *p, const char *s, size_t len, int origin0)
{
    if (len == 0) /* HF drops empty splits */
        return 0;
    if (p->n == p->cap) {
        size_t nc = p->cap ? 2 * p->cap : 64;
        piece_t *nv = realloc(p->v, nc * sizeof *nv);
        if (!nv)
            return oom();
        p->v = nv;
        p->cap = nc;
    }
    p->v[p->n++] = (piece_t){s, len, origin0};
    return 0;
}

static int span_push(spans_t *sp, size_t a, size_t b, int m)
{
    if (sp->n == sp->cap) {
        size_t nc = sp->cap ? 2 * sp->cap : 64;
        span_t *nv = realloc(sp->v, nc * sizeof *nv);
        if (!nv)
            return oom();
        sp->v = nv;
        sp->cap = nc;
    }
    sp->v[sp->n++] = (span_t){a, b, m};
    return 0;
}

static void enc_free(enc_t *e)
{
    free(e->ids.v);
    tk_arena_free(&e->ar);
    free(e->cur.v);
    free(e->next.v);
    free(e->spans.v);
    free(e->out.v);
    tk_bpe_scratch_free(&e->bpe);
    pcre2_match_data_free(e->md);
    pcre2_match_context_free(e->mc);
    pcre2_jit_stack_free(e->js);
}

/* ---- splitting ---------------------------------------------------------------------- */

/* Cover s[0..n) with spans: each non-empty regex match, and the gaps. The
 * JIT stack is allowed to grow to 64 MB so patterns like \s+(?!\S) survive
 * megabyte-long runs of whitespace. */
static int regex_spans(enc_t *e, const pcre2_code *re, const char *s, size_t n)
{
    if (!e->md) {
        e->md = pcre2_match_data_create(1, NULL);
        e->mc = pcre2_match_context_create(NULL);
        e->js = pcre2_jit_stack_create(32 * 1024, 64 * 1024 * 1024, NULL);
        if (!e->md || !e->mc || !e->js)
            return oom();
        pcre2_jit_stack_assign(e->mc, NULL, e->js);
    }
    e->spans.n = 0;
    size_t prev = 0, off = 0;
    while (off < n) {
        int rc = pcre2_match(re, (PCRE2_SPTR)s, n, off, 0, e->md, e->mc);
        if (rc == PCRE2_ERROR_NOMATCH)
            break;
        if (rc < 0) {
            PCRE2_UCHAR msg[256];
            pcre2_get_error_message(rc, msg, sizeof msg);
            return llmq_fail("pre-tokenizer regex failed: %s", (const char *)msg);
        }
        PCRE2_SIZE *ov = pcre2_get_ovector_pointer(e->md);
        size_t a = ov[0], b = ov[1];
        if (a == b) { /* empty matches split nothing (none of the real patterns has one) */
            if (a >= n)
                break;
            off = a + tk_utf8_len(s + a, n - a);
            continue;
        }
        if (a > prev && span_push(&e->spans, prev, a, 0))
            return -1;
        if (span_push(&e->spans, a, b, 1))
            return -1;
        prev = off = b;
    }
    if (prev < n)
        return span_push(&e->spans, prev, n, 0);
    return 0;
}

/* Every occurrence of a literal is its own match (Metaspace's char split). */
static int literal_spans(enc_t *e, const char *s, size_t n, const char *pat, size_t plen)
{
    e->spans.n = 0;
    size_t prev = 0;
    const char *hit;
    while ((hit = memmem(s + prev, n - prev, pat, plen))) {
        size_t a = (size_t)(hit - s);
        if ((a > prev && span_push(&e->spans, prev, a, 0)) || span_push(&e->spans, a, a + plen, 1))
            return -1;
        prev = a + plen;
    }
    return prev < n ? span_push(&e->spans, prev, n, 0) : 0;
}

/* HF's SplitDelimiterBehavior over e->spans, into e->out. */
static int apply_behavior(enc_t *e, int behavior)
{
    spans_t *in = &e->spans, *out = &e->out;
    int prev_match = 0;
    out->n = 0;
    if (behavior == TK_SPLIT_MERGED_NEXT) {
        /* A match joins the piece after it unless that piece is a match too;
         * walk right to left, then restore the order. */
        for (size_t k = in->n; k-- > 0;) {
            span_t sp = in->v[k];
            if (sp.m && !prev_match && out->n)
                out->v[out->n - 1].a = sp.a;
            else if (span_push(out, sp.a, sp.b, 0))
                return -1;
            prev_match = sp.m;
        }
        for (size_t i = 0, j = out->n ? out->n - 1 : 0; i < j; i++, j--) {
            span_t tmp = out->v[i];
            out->v[i] = out->v[j];
            out->v[j] = tmp;
        }
        return 0;
    }
    for (size_t k = 0; k < in->n; k++) {
        span_t sp = in->v[k];
        int join = 0;
        if (behavior == TK_SPLIT_REMOVED && sp.m)
            continue;
        if (behavior == TK_SPLIT_MERGED_PREV)
            join = sp.m && !prev_match && out->n;
        else if (behavior == TK_SPLIT_CONTIGUOUS)
            join = sp.m == prev_match && out->n;
        if (join)
            out->v[out->n - 1].b = sp.b;
        else if (span_push(out, sp.a, sp.b, 0))
            return -1;
        prev_match = sp.m;
    }
    return 0;
}

static int emit_spans(enc_t *e, piece_t in, pieces_t *out)
{
    for (size_t k = 0; k < e->out.n; k++) {
        span_t sp = e->out.v[k];
        if (piece_push(out, in.s + sp.a, sp.b - sp.a, in.origin0 && sp.a == 0))
            return -1;
    }
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------ */

static int pt_split(enc_t *e, const tk_pretok *p, piece_t in, pieces_t *out)
{
    if (regex_spans(e, p->re, in.s, in.len))
        return -1;
    if (p->invert)
        for (size_t k = 0; k < e->spans.n; k++)
            e->spans.v[k].m = !e->spans.v[k].m;
    return apply_behavior(e, p->behavior) || emit_spans(e, in, out) ? -1 : 0;
}

/* ByteLevel: optional leading space, optional GPT-2 regex split, then every
 * byte replaced by its printable stand-in. */
static int pt_bytelevel(enc_t *e, const tk_pretok *p, piece_t in, pieces_t *out)
{
    const tk_bytemap *bm = &e->t->bytemap;
    if (p->add_prefix_space && in.s[0] != ' ') {
        char *buf = tk_arena_alloc(&e->ar, in.len + 1);
        if (!buf)
            return oom();
        buf[0] = ' ';
        memcpy(buf + 1, in.s, in.len);
        in.s = buf;
        in.len++;
    }
    e->out.n = 0;
    if (p->re) {
        if (regex_spans(e, p->re, in.s, in.len) || apply_behavior(e, TK_SPLIT_ISOLATED))
            return -1;
    } else if (span_push(&e->out, 0, in.len, 0)) {
        return -1;
    }
    for (size_t k = 0; k < e->out.n; k++) {
        span_t sp = e->out.v[k];
        char *buf = tk_arena_alloc(&e->ar, 2 * (sp.b - sp.a));
        size_t o = 0;
        if (!buf)
            return oom();
        for (size_t i = sp.a; i < sp.b; i++) {
            unsigned char c = (unsigned char)in.s[i];
            memcpy(buf + o, bm->enc[c], bm->enc_len[c]);
            o += bm->enc_len[c];
        }
        if (piece_push(out, buf, o, in.origin0 && sp.a == 0))
            return -1;
    }
    return 0;
}

/* Metaspace: spaces -> replacement, prepend one (scheme permitting, and not
 * if the text already starts with it), split before each replacement. */
static int pt_metaspace(enc_t *e, const tk_pretok *p, piece_t in, pieces_t *out)
{
    size_t c = tk_count(in.s, in.len, " ", 1);
    int starts =
        in.s[0] == ' ' || (in.len >= p->repl_len && memcmp(in.s, p->repl, p->repl_len) == 0);
    int prepend = !starts && (p->prepend_scheme == TK_PREPEND_ALWAYS ||
                              (p->prepend_scheme == TK_PREPEND_FIRST && in.origin0));
    size_t n = in.len + c * (p->repl_len - 1) + (prepend ? p->repl_len : 0);
    char *buf = tk_arena_alloc(&e->ar, n);
    if (!buf)
        return oom();
    size_t o = prepend ? p->repl_len : 0;
    memcpy(buf, p->repl, o);
    tk_replace_all(buf + o, in.s, in.len, " ", 1, p->repl, p->repl_len);
    piece_t ps = {buf, n, in.origin0};
    if (!p->split)
        return piece_push(out, buf, n, in.origin0);
    if (literal_spans(e, buf, n, p->repl, p->repl_len) || apply_behavior(e, TK_SPLIT_MERGED_NEXT))
        return -1;
    return emit_spans(e, ps, out);
}

static int pretokenize_and_bpe(enc_t *e, const char *s, size_t n, int origin0)
{
    const llmq_tokenizer *t = e->t;
    e->cur.n = 0;
    if (piece_push(&e->cur, s, n, origin0))
        return -1;
    for (size_t i = 0; i < t->n_pre; i++) {
        const tk_pretok *p = &t->pre[i];
        e->next.n = 0;
        for (size_t k = 0; k < e->cur.n; k++) {
            piece_t in = e->cur.v[k];
            int rc = p->kind == TK_PT_SPLIT       ? pt_split(e, p, in, &e->next)
                     : p->kind == TK_PT_BYTELEVEL ? pt_bytelevel(e, p, in, &e->next)
                                                  : pt_metaspace(e, p, in, &e->next);
            if (rc)
                return -1;
        }
        pieces_t tmp = e->cur;
        e->cur = e->next;
        e->next = tmp;
    }
    for (size_t k = 0; k < e->cur.n; k++)
        if (tk_bpe_word(&t->bpe, e->cur.v[k].s, e->cur.v[k].len, &e->bpe, &e->ids))
            return -1;
    return 0;
}

/* ---- added tokens ---------------------------------------------------------------------- */

static size_t space_before(const char *s, size_t end)
{
    while (end > 0) {
        size_t b = end - 1;
        while (b > 0 && ((unsigned char)s[b] & 0xC0) == 0x80 && end - b < 4)
            b--;
        size_t k = tk_utf8_len(s + b, end - b);
        if (b + k != end || !tk_is_space(tk_utf8_cp(s + b, k)))
            break;
        end = b;
    }
    return end;
}

static size_t space_after(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        size_t k = tk_utf8_len(s + i, n - i);
        if (!tk_is_space(tk_utf8_cp(s + i, k)))
            break;
        i += k;
    }
    return i;
}

/* Whether the character starting at s[i] (or, before, ending at s[i]) is a
 * word character: Rust's is_alphanumeric or '_', through t->word_re. */
static int word_char(const llmq_tokenizer *t, const char *s, size_t n, size_t i, int before)
{
    if (before) {
        size_t p = i - 1;
        while (p > 0 && ((unsigned char)s[p] & 0xC0) == 0x80 && i - p < 4)
            p--;
        i = p;
    }
    size_t k = tk_utf8_len(s + i, n - i);
    pcre2_match_data *md = pcre2_match_data_create(1, NULL);
    int rc = md ? pcre2_match(t->word_re, (PCRE2_SPTR)(s + i), k, 0, 0, md, NULL) : -1;
    pcre2_match_data_free(md);
    return rc >= 0;
}

/* single_word: no word character touching the match on either side. */
static int single_word_ok(const llmq_tokenizer *t, const char *s, size_t n, size_t a, size_t b)
{
    return (a == 0 || !word_char(t, s, n, a, 1)) && (b >= n || !word_char(t, s, n, b, 0));
}

/* Next usable added-token match in s at or after *from, leftmost-longest
 * like HF's aho-corasick matcher; the scan resumes after every match, used
 * or not. lstrip / rstrip widen the match over whitespace, but lstrip never
 * reaches back before `floor` (the end of the previous match). */
static int next_added(const llmq_tokenizer *t, int norm, const char *s, size_t n, size_t *from,
                      size_t floor, size_t *ms, size_t *me, int32_t *id)
{
    const tk_trie *tr = norm ? &t->trie_norm : &t->trie_raw;
    if (tr->start[256] == 0)
        return 0;
    for (size_t i = *from; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        for (uint32_t k = tr->start[c]; k < tr->start[c + 1]; k++) {
            const tk_added *a = &t->added[tr->idx[k]];
            const char *as = norm ? a->ns : a->s;
            size_t al = norm ? a->nlen : a->len;
            if (al > n - i || memcmp(s + i, as, al) != 0)
                continue;
            size_t start = i, stop = i + al;
            *from = stop;
            if (a->single_word && !single_word_ok(t, s, n, start, stop)) {
                i = stop - 1; /* resume after the rejected match */
                break;
            }
            if (a->lstrip) {
                start = space_before(s, start);
                if (start < floor)
                    start = floor;
            }
            if (a->rstrip)
                stop += space_after(s + stop, n - stop);
            if (*from < stop)
                *from = stop;
            *ms = start;
            *me = stop;
            *id = a->id;
            return 1;
        }
    }
    return 0;
}

/* A piece of raw text between non-normalized added tokens: normalize it,
 * then split on the normalized added tokens. */
static int encode_normalized(enc_t *e, const char *s, size_t n, int origin0)
{
    const char *ns;
    size_t nn;
    if (tk_normalize(e->t, s, n, &e->ar, &ns, &nn))
        return oom();
    size_t from = 0, floor = 0, ms, me;
    int32_t id;
    while (next_added(e->t, 1, ns, nn, &from, floor, &ms, &me, &id)) {
        if (ms > floor && pretokenize_and_bpe(e, ns + floor, ms - floor, origin0 && floor == 0))
            return -1;
        if (tk_ids_push(&e->ids, id))
            return oom();
        floor = me;
    }
    if (floor < nn)
        return pretokenize_and_bpe(e, ns + floor, nn - floor, origin0 && floor == 0);
    return 0;
}

static int encode_raw(enc_t *e, const char *s, size_t n)
{
    size_t from = 0, floor = 0, ms, me;
    int32_t id;
    while (next_added(e->t, 0, s, n, &from, floor, &ms, &me, &id)) {
        if (ms > floor && encode_normalized(e, s + floor, ms - floor, floor == 0))
            return -1;
        if (tk_ids_push(&e->ids, id))
            return oom();
        floor = me;
    }
    if (floor < n)
        return encode_normalized(e, s + floor, n - floor, floor == 0);
    return 0;
}

int tok_encode(const llmq_tokenizer *t, const char *text, size_t len, int add_bos, int32_t **ids,
               size_t *n)
{
    enc_t e = {.t = t};
    *ids = NULL;
    *n = 0;
    if (add_bos && t->bos_id >= 0 && tk_ids_push(&e.ids, t->bos_id)) {
        enc_free(&e);
        return oom();
    }
    if (encode_raw(&e, text, len)) {
        enc_free(&e);
        return llmq_wrap("%s", t->path);
    }
    if (!e.ids.v && !(e.ids.v = malloc(sizeof *e.ids.v))) { /* never hand back NULL */
        enc_free(&e);
        return oom();
    }
    *ids = e.ids.v;
    *n = e.ids.n;
    e.ids.v = NULL;
    enc_free(&e);
    return 0;
}
