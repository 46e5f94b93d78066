/* tokenizer.json's pipeline steps -> tk_norm / tk_pretok / tk_dec, and the
 * small cJSON helpers the loader shares. Sequences are flattened; every
 * type not listed in the messages below is refused by name. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "tokenizer_impl.h"

/* GPT-2's pre-tokenizer regex, used by ByteLevel with use_regex. */
static const char GPT2_PATTERN[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

/* ---- small JSON helpers ------------------------------------------------------ */

const char *tk_jstr(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

int tk_jbool(const cJSON *o, const char *key, int dflt)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsBool(v) ? cJSON_IsTrue(v) : dflt;
}

const char *tk_jtype(const cJSON *o)
{
    const char *s = tk_jstr(o, "type");
    return s ? s : "(none)";
}

int tk_push(void **arr, size_t *n, size_t elem, const void *item)
{
    void *na = realloc(*arr, (*n + 1) * elem);
    if (!na)
        return llmq_fail("out of memory");
    memcpy((char *)na + *n * elem, item, elem);
    *arr = na;
    (*n)++;
    return 0;
}

char *tk_dup(const char *s, size_t *len)
{
    size_t n = strlen(s);
    char *d = malloc(n + 1);
    if (d)
        memcpy(d, s, n + 1);
    if (len)
        *len = n;
    return d;
}

/* A String / Regex pattern object -> the literal string; Regex is refused
 * (only the Split pre-tokenizer compiles regexes, see load_split). */
static const char *string_pattern(const cJSON *o, const char *what, const char *path)
{
    const cJSON *p = cJSON_GetObjectItemCaseSensitive(o, "pattern");
    const char *s = tk_jstr(p, "String");
    if (!s) {
        if (tk_jstr(p, "Regex"))
            llmq_fail("%s: %s with a Regex pattern is not supported", path, what);
        else
            llmq_fail("%s: %s without a pattern", path, what);
    }
    return s;
}

/* ---- normalizer ---------------------------------------------------------------------- */

int tk_load_normalizer(llmq_tokenizer *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *type = tk_jtype(n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "normalizers");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
            if (tk_load_normalizer(t, e, path))
                return -1;
        return 0;
    }
    tk_norm s = {0};
    if (strcmp(type, "Prepend") == 0) {
        const char *p = tk_jstr(n, "prepend");
        if (!p)
            return llmq_fail("%s: Prepend normalizer without \"prepend\"", path);
        s.kind = TK_NORM_PREPEND;
        s.a = tk_dup(p, &s.alen);
    } else if (strcmp(type, "Replace") == 0) {
        const char *p = string_pattern(n, "Replace normalizer", path), *c = tk_jstr(n, "content");
        if (!p)
            return -1;
        if (!*p || !c)
            return llmq_fail("%s: Replace normalizer needs a non-empty pattern and content", path);
        s.kind = TK_NORM_REPLACE;
        s.a = tk_dup(p, &s.alen);
        s.b = tk_dup(c, &s.blen);
    } else if (strcmp(type, "NFC") == 0 || strcmp(type, "NFD") == 0 ||
               strcmp(type, "NFKC") == 0 || strcmp(type, "NFKD") == 0) {
        s.kind = strcmp(type, "NFC") == 0    ? TK_NORM_NFC
                 : strcmp(type, "NFD") == 0  ? TK_NORM_NFD
                 : strcmp(type, "NFKC") == 0 ? TK_NORM_NFKC
                                             : TK_NORM_NFKD;
        return tk_push((void **)&t->norm, &t->n_norm, sizeof s, &s);
    } else {
        return llmq_fail("%s: unsupported normalizer type \"%s\" (llmq supports Prepend, Replace, "
                         "NFC, NFD, NFKC, NFKD, Sequence)",
                         path, type);
    }
    if (!s.a || (s.kind == TK_NORM_REPLACE && !s.b) ||
        tk_push((void **)&t->norm, &t->n_norm, sizeof s, &s)) {
        free(s.a);
        free(s.b);
        return llmq_fail("out of memory");
    }
    return 0;
}

/* ---- pre-tokenizers ------------------------------------------------------------------- */

static int compile_regex(pcre2_code **out, const char *pat, uint32_t extra, const char *path)
{
    int err;
    PCRE2_SIZE off;
    /* UCP makes \s, \w, \d Unicode-aware like Oniguruma's; a literal has
     * none and PCRE2 refuses the flag with PCRE2_LITERAL. */
    uint32_t flags = PCRE2_UTF | PCRE2_MATCH_INVALID_UTF | extra;
    if (!(extra & PCRE2_LITERAL))
        flags |= PCRE2_UCP;
    *out = pcre2_compile((PCRE2_SPTR)pat, PCRE2_ZERO_TERMINATED, flags, &err, &off, NULL);
    if (!*out) {
        PCRE2_UCHAR msg[256];
        pcre2_get_error_message(err, msg, sizeof msg);
        return llmq_fail("%s: cannot compile pre-tokenizer regex /%s/ at offset %zu: %s", path, pat,
                         (size_t)off, (const char *)msg);
    }
    pcre2_jit_compile(*out, PCRE2_JIT_COMPLETE); /* falls back to the interpreter */
    return 0;
}

static int split_behavior(const char *s)
{
    static const char *names[] = {"Removed", "Isolated", "MergedWithPrevious", "MergedWithNext",
                                  "Contiguous"};
    for (int i = 0; i < 5; i++)
        if (s && strcmp(s, names[i]) == 0)
            return i;
    return -1;
}

static int load_split(tk_pretok *p, const cJSON *n, const char *path)
{
    const cJSON *pat = cJSON_GetObjectItemCaseSensitive(n, "pattern");
    const char *re = tk_jstr(pat, "Regex"), *lit = tk_jstr(pat, "String");
    p->kind = TK_PT_SPLIT;
    p->behavior = split_behavior(tk_jstr(n, "behavior"));
    p->invert = tk_jbool(n, "invert", 0);
    if (p->behavior < 0)
        return llmq_fail("%s: Split pre-tokenizer with unsupported behavior \"%s\"", path,
                         tk_jstr(n, "behavior") ? tk_jstr(n, "behavior") : "(none)");
    if (re)
        return compile_regex(&p->re, re, 0, path);
    if (lit && *lit)
        return compile_regex(&p->re, lit, PCRE2_LITERAL, path);
    return llmq_fail("%s: Split pre-tokenizer without a Regex or String pattern", path);
}

static int load_metaspace(tk_pretok *p, const cJSON *n, const char *path)
{
    const char *r = tk_jstr(n, "replacement"), *scheme = tk_jstr(n, "prepend_scheme");
    if (!r || !*r || strlen(r) >= sizeof p->repl || tk_utf8_len(r, strlen(r)) != strlen(r))
        return llmq_fail("%s: Metaspace needs a one-character replacement", path);
    p->kind = TK_PT_METASPACE;
    p->repl_len = strlen(r);
    memcpy(p->repl, r, p->repl_len + 1);
    p->split = tk_jbool(n, "split", 1);
    p->prepend_scheme = TK_PREPEND_ALWAYS; /* HF's default */
    if (scheme && strcmp(scheme, "first") == 0)
        p->prepend_scheme = TK_PREPEND_FIRST;
    else if (scheme && strcmp(scheme, "never") == 0)
        p->prepend_scheme = TK_PREPEND_NEVER;
    else if (scheme && strcmp(scheme, "always") != 0)
        return llmq_fail("%s: Metaspace prepend_scheme \"%s\" unknown", path, scheme);
    if (!tk_jbool(n, "add_prefix_space", 1)) /* legacy field: false means never */
        p->prepend_scheme = TK_PREPEND_NEVER;
    return 0;
}

int tk_load_pretok(llmq_tokenizer *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *type = tk_jtype(n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "pretokenizers");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
            if (tk_load_pretok(t, e, path))
                return -1;
        return 0;
    }
    tk_pretok p = {0};
    int rc;
    if (strcmp(type, "ByteLevel") == 0) {
        p.kind = TK_PT_BYTELEVEL;
        p.add_prefix_space = tk_jbool(n, "add_prefix_space", 1);
        rc = tk_jbool(n, "use_regex", 1) ? compile_regex(&p.re, GPT2_PATTERN, 0, path) : 0;
    } else if (strcmp(type, "Split") == 0) {
        rc = load_split(&p, n, path);
    } else if (strcmp(type, "Metaspace") == 0) {
        rc = load_metaspace(&p, n, path);
    } else if (strcmp(type, "Digits") == 0) {
        /* Digits = Isolated split on each numeric char (Rust is_numeric =
         * \p{N}), or on runs of them. */
        p.kind = TK_PT_SPLIT;
        p.behavior = TK_SPLIT_ISOLATED;
        rc = compile_regex(&p.re, tk_jbool(n, "individual_digits", 0) ? "\\p{N}" : "\\p{N}+", 0,
                           path);
    } else {
        return llmq_fail("%s: unsupported pre_tokenizer type \"%s\" (llmq supports ByteLevel, "
                         "Split, Metaspace, Digits, Sequence)",
                         path, type);
    }
    if (rc || tk_push((void **)&t->pre, &t->n_pre, sizeof p, &p)) {
        pcre2_code_free(p.re);
        return -1;
    }
    return 0;
}

/* ---- decoders ---------------------------------------------------------------------------- */

int tk_load_decoder(llmq_tokenizer *t, const cJSON *n, const char *path)
{
    if (!n || cJSON_IsNull(n))
        return 0;
    const char *type = tk_jtype(n);
    if (strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(n, "decoders");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
            if (tk_load_decoder(t, e, path))
                return -1;
        return 0;
    }
    tk_dec d = {0};
    tk_pretok ms = {0}; /* a Metaspace decoder reads the pre-tokenizer's fields */
    const char *a = NULL, *b = NULL;
    if (strcmp(type, "ByteLevel") == 0) {
        d.kind = TK_DEC_BYTELEVEL;
    } else if (strcmp(type, "ByteFallback") == 0) {
        d.kind = TK_DEC_BYTEFALLBACK;
    } else if (strcmp(type, "Fuse") == 0) {
        d.kind = TK_DEC_FUSE;
    } else if (strcmp(type, "Replace") == 0) {
        d.kind = TK_DEC_REPLACE;
        if (!(a = string_pattern(n, "Replace decoder", path)))
            return -1;
        if (!*a || !(b = tk_jstr(n, "content")))
            return llmq_fail("%s: Replace decoder needs a non-empty pattern and content", path);
    } else if (strcmp(type, "Strip") == 0) {
        const cJSON *st = cJSON_GetObjectItemCaseSensitive(n, "start");
        const cJSON *sp = cJSON_GetObjectItemCaseSensitive(n, "stop");
        d.kind = TK_DEC_STRIP;
        a = tk_jstr(n, "content");
        if (!a || !*a || tk_utf8_len(a, strlen(a)) != strlen(a))
            return llmq_fail("%s: Strip decoder needs a one-character content", path);
        d.start = cJSON_IsNumber(st) && st->valuedouble > 0 ? (size_t)st->valuedouble : 0;
        d.stop = cJSON_IsNumber(sp) && sp->valuedouble > 0 ? (size_t)sp->valuedouble : 0;
    } else if (strcmp(type, "Metaspace") == 0) {
        if (load_metaspace(&ms, n, path))
            return -1;
        d.kind = TK_DEC_METASPACE;
        d.prepend_scheme = ms.prepend_scheme;
        a = ms.repl;
    } else {
        return llmq_fail("%s: unsupported decoder type \"%s\" (llmq supports ByteLevel, "
                         "ByteFallback, Fuse, Replace, Strip, Metaspace, Sequence)",
                         path, type);
    }
    if ((a && !(d.a = tk_dup(a, &d.alen))) || (b && !(d.b = tk_dup(b, &d.blen))) ||
        tk_push((void **)&t->dec, &t->n_dec, sizeof d, &d)) {
        free(d.a);
        free(d.b);
        return llmq_fail("out of memory");
    }
    return 0;
}
