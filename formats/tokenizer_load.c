/* Loading a Hugging Face tokenizer.json (+ tokenizer_config.json).
 *
 * Only what the two BPE families need is accepted; every other model,
 * normalizer, pre-tokenizer or decoder type is refused by name, because a
 * tokenizer that silently skips a step produces plausible but wrong ids. */
#include <cjson/cJSON.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "../src/fileio.h"
#include "tokenizer_impl.h"

/* Token names in tokenizer_config.json are a string or {"content": ...}. */
static const char *jtoken(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (cJSON_IsString(v))
        return v->valuestring;
    if (cJSON_IsObject(v))
        return tk_jstr(v, "content");
    return NULL;
}

/* ---- model ---------------------------------------------------------------------- */

static int load_vocab(tk_bpe *b, const cJSON *vocab, const char *path)
{
    if (!cJSON_IsObject(vocab))
        return llmq_fail("%s: model.vocab is not an object", path);
    size_t n = 0, bytes = 0;
    for (const cJSON *e = vocab->child; e; e = e->next) {
        n++;
        bytes += strlen(e->string);
    }
    if (tk_bpe_init_vocab(b, n, bytes))
        return llmq_wrap("%s", path);
    size_t i = 0;
    for (const cJSON *e = vocab->child; e; e = e->next, i++) {
        double d = e->valuedouble;
        if (!cJSON_IsNumber(e) || d < 0 || d > INT32_MAX - 1 || d != (double)(int32_t)d)
            return llmq_fail("%s: vocab entry \"%s\" has no valid id", path, e->string);
        tk_bpe_set_entry(b, i, e->string, strlen(e->string), (int32_t)d);
    }
    return tk_bpe_index(b);
}

/* Merges come as "a b" strings (exactly one space, as HF's BadMerges check)
 * or as ["a", "b"] pairs. */
static int merge_parts(const cJSON *m, size_t rank, const char *path, char **a, char **b)
{
    *a = *b = NULL;
    if (cJSON_IsString(m)) {
        const char *s = m->valuestring, *sp = strchr(s, ' ');
        if (!sp || strchr(sp + 1, ' '))
            return llmq_fail("%s: merge %zu (\"%s\") is not two tokens separated by one space",
                             path, rank, s);
        *a = strndup(s, (size_t)(sp - s));
        *b = strdup(sp + 1);
    } else if (cJSON_GetArraySize(m) == 2 && cJSON_IsString(cJSON_GetArrayItem(m, 0)) &&
               cJSON_IsString(cJSON_GetArrayItem(m, 1))) {
        *a = strdup(cJSON_GetArrayItem(m, 0)->valuestring);
        *b = strdup(cJSON_GetArrayItem(m, 1)->valuestring);
    } else {
        return llmq_fail("%s: merge %zu is neither \"a b\" nor [\"a\", \"b\"]", path, rank);
    }
    if (!*a || !*b) {
        free(*a);
        free(*b);
        return llmq_fail("out of memory");
    }
    return 0;
}

static int load_merges(tk_bpe *b, const cJSON *merges, const char *path)
{
    if (merges && !cJSON_IsArray(merges))
        return llmq_fail("%s: model.merges is not an array", path);
    if (tk_bpe_init_merges(b, (size_t)cJSON_GetArraySize(merges)))
        return llmq_wrap("%s", path);
    uint32_t rank = 0;
    for (const cJSON *m = merges ? merges->child : NULL; m; m = m->next) {
        if (cJSON_IsString(m) && strncmp(m->valuestring, "#version", 8) == 0)
            continue; /* merges.txt header, skipped by HF without taking a rank */
        char *l, *r;
        if (merge_parts(m, rank, path, &l, &r))
            return -1;
        size_t ll = strlen(l), rl = strlen(r);
        char *joined = malloc(ll + rl + 1);
        int32_t li = tk_bpe_lookup(b, l, ll), ri = tk_bpe_lookup(b, r, rl), ni = -1;
        if (joined) {
            memcpy(joined, l, ll);
            memcpy(joined + ll, r, rl + 1);
            ni = tk_bpe_lookup(b, joined, ll + rl);
        }
        int rc = 0;
        if (!joined)
            rc = llmq_fail("out of memory");
        else if (li < 0 || ri < 0 || ni < 0)
            rc = llmq_fail("%s: merge %u (\"%s\" \"%s\"): \"%s\" is not in the vocabulary", path,
                           rank, l, r,
                           li < 0   ? l
                           : ri < 0 ? r
                                    : joined);
        else
            tk_bpe_add_merge(b, li, ri, rank, ni);
        free(l);
        free(r);
        free(joined);
        if (rc)
            return rc;
        rank++;
    }
    return 0;
}

static int load_model(tk_bpe *b, const cJSON *m, const char *path)
{
    if (!cJSON_IsObject(m))
        return llmq_fail("%s: no \"model\" object", path);
    const char *type = tk_jstr(m, "type");
    /* Very old files omit the type; a model with merges can only be BPE. */
    if (type ? strcmp(type, "BPE") != 0 : !cJSON_GetObjectItemCaseSensitive(m, "merges"))
        return llmq_fail("%s: unsupported model type \"%s\" (llmq supports BPE only)", path,
                         type ? type : "(none)");
    const cJSON *drop = cJSON_GetObjectItemCaseSensitive(m, "dropout");
    if (cJSON_IsNumber(drop) && drop->valuedouble != 0.0)
        return llmq_fail("%s: BPE dropout %g is not supported (encoding would be random)", path,
                         drop->valuedouble);
    const char *pre = tk_jstr(m, "continuing_subword_prefix"),
               *suf = tk_jstr(m, "end_of_word_suffix");
    if ((pre && *pre) || (suf && *suf))
        return llmq_fail("%s: BPE continuing_subword_prefix / end_of_word_suffix are not supported",
                         path);
    b->byte_fallback = tk_jbool(m, "byte_fallback", 0);
    b->fuse_unk = tk_jbool(m, "fuse_unk", 0);
    b->ignore_merges = tk_jbool(m, "ignore_merges", 0);
    if (load_vocab(b, cJSON_GetObjectItemCaseSensitive(m, "vocab"), path) ||
        load_merges(b, cJSON_GetObjectItemCaseSensitive(m, "merges"), path))
        return -1;
    const char *unk = tk_jstr(m, "unk_token");
    b->unk_id = -1;
    if (unk) {
        b->has_unk = 1;
        if (!(b->unk_name = tk_dup(unk, NULL)))
            return llmq_fail("out of memory");
        b->unk_id = tk_bpe_lookup(b, unk, strlen(unk));
    }
    return 0;
}

/* ---- added tokens ------------------------------------------------------------------ */

static int load_added(llmq_tokenizer *t, const cJSON *arr, const char *path)
{
    if (!arr || cJSON_IsNull(arr))
        return 0;
    if (!cJSON_IsArray(arr))
        return llmq_fail("%s: added_tokens is not an array", path);
    for (const cJSON *e = arr->child; e; e = e->next) {
        const cJSON *id = cJSON_GetObjectItemCaseSensitive(e, "id");
        const char *content = tk_jstr(e, "content");
        if (!cJSON_IsNumber(id) || id->valuedouble < 0 || id->valuedouble > INT32_MAX - 1 ||
            !content)
            return llmq_fail("%s: an added token lacks a valid id or content", path);
        tk_added a = {0};
        a.id = (int32_t)id->valuedouble;
        a.special = tk_jbool(e, "special", 0);
        a.normalized = tk_jbool(e, "normalized", !a.special); /* HF's default */
        a.lstrip = tk_jbool(e, "lstrip", 0);
        a.rstrip = tk_jbool(e, "rstrip", 0);
        a.single_word = tk_jbool(e, "single_word", 0);
        if (!(a.s = tk_dup(content, &a.len)))
            return llmq_fail("out of memory");
        if (tk_push((void **)&t->added, &t->n_added, sizeof a, &a)) {
            free(a.s);
            return -1;
        }
    }
    return 0;
}

/* ---- id -> text, added-token tries ------------------------------------------------------- */

/* HF ignores the ids written in added_tokens: each token takes the id of
 * the same content added before it, else its model vocab id, else the next
 * id after the model vocab (counted as distinct entries) and after every
 * added id so far. Files HF saved agree with this; hand-edited ones may not,
 * and then HF's numbering is the one its encode produces. */
static void assign_added_ids(llmq_tokenizer *t)
{
    int32_t vocab_n = (int32_t)t->bpe.n_keys, max = -1;
    for (size_t i = 0; i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        a->id = -1;
        if (a->len == 0) /* HF skips empty tokens */
            continue;
        for (size_t j = 0; j < i && a->id < 0; j++)
            if (t->added[j].len == a->len && memcmp(t->added[j].s, a->s, a->len) == 0)
                a->id = t->added[j].id;
        if (a->id < 0)
            a->id = tk_bpe_lookup(&t->bpe, a->s, a->len);
        if (a->id < 0)
            a->id = max >= vocab_n ? max + 1 : vocab_n;
        if (a->id > max)
            max = a->id;
    }
}

/* id -> text for decoding. An added token wins over the model's entry, and
 * a "normalized" one reads as its normalized content (HF's id_to_token
 * does so: "a b" under the SentencePiece normalizer reads "▁a▁b"). */
static int build_id_table(llmq_tokenizer *t)
{
    int32_t max = t->bpe.max_id;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id > max)
            max = t->added[i].id;
    t->n_vocab = max + 1;
    t->id_tok = calloc((size_t)t->n_vocab + 1, sizeof *t->id_tok);
    if (!t->id_tok)
        return llmq_fail("out of memory");
    for (size_t i = 0; i < t->bpe.n_ent; i++) {
        const tk_vent *v = &t->bpe.ent[i];
        t->id_tok[v->id].s = v->s;
        t->id_tok[v->id].len = v->len;
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const tk_added *a = &t->added[i];
        if (a->id < 0)
            continue;
        t->id_tok[a->id].s = a->normalized ? a->ns : a->s;
        t->id_tok[a->id].len = a->normalized ? a->nlen : a->len;
    }
    return 0;
}

typedef struct {
    uint32_t idx;
    unsigned char first;
    size_t len;
} trie_key;

static int trie_cmp(const void *pa, const void *pb)
{
    const trie_key *a = pa, *b = pb;
    if (a->first != b->first)
        return a->first < b->first ? -1 : 1;
    if (a->len != b->len)
        return a->len > b->len ? -1 : 1; /* longest first: leftmost-longest */
    return a->idx < b->idx ? -1 : 1;
}

static int build_trie(llmq_tokenizer *t, tk_trie *tr, int norm)
{
    size_t n = 0;
    trie_key *keys = malloc((t->n_added + 1) * sizeof *keys);
    tr->idx = malloc((t->n_added + 1) * sizeof *tr->idx);
    if (!keys || !tr->idx) {
        free(keys);
        return llmq_fail("out of memory");
    }
    for (size_t i = 0; i < t->n_added; i++) {
        const tk_added *a = &t->added[i];
        size_t len = norm ? a->nlen : a->len;
        if (a->normalized != norm || len == 0)
            continue;
        keys[n].idx = (uint32_t)i;
        keys[n].first = (unsigned char)(norm ? a->ns : a->s)[0];
        keys[n].len = len;
        n++;
    }
    qsort(keys, n, sizeof *keys, trie_cmp);
    memset(tr->start, 0, sizeof tr->start);
    for (size_t k = 0; k < n; k++) {
        tr->idx[k] = keys[k].idx;
        tr->start[keys[k].first + 1]++;
    }
    for (int b = 0; b < 256; b++)
        tr->start[b + 1] += tr->start[b];
    free(keys);
    return 0;
}

int tk_build_tries(llmq_tokenizer *t)
{
    for (size_t i = 0; i < t->n_added; i++) {
        tk_added *a = &t->added[i];
        if (!a->normalized)
            continue;
        tk_arena ar = {0};
        const char *s;
        size_t n;
        int rc = tk_normalize(t, a->s, a->len, &ar, &s, &n);
        if (!rc && (a->ns = malloc(n + 1))) {
            memcpy(a->ns, s, n);
            a->ns[n] = 0;
            a->nlen = n;
        }
        tk_arena_free(&ar);
        if (rc || !a->ns)
            return llmq_fail("out of memory");
    }
    for (size_t i = 0; i < t->n_added && !t->word_re; i++) {
        if (!t->added[i].single_word)
            continue;
        /* Rust's char::is_alphanumeric is Alphabetic or Numeric; PCRE2 has
         * both tables, so the word test borrows them. */
        int err;
        PCRE2_SIZE off;
        t->word_re = pcre2_compile((PCRE2_SPTR) "[\\p{Alphabetic}\\p{N}_]", PCRE2_ZERO_TERMINATED,
                                   PCRE2_UTF | PCRE2_UCP | PCRE2_ANCHORED | PCRE2_MATCH_INVALID_UTF,
                                   &err, &off, NULL);
        if (!t->word_re)
            return llmq_fail("cannot compile the word-character class (PCRE2 error %d)", err);
    }
    return build_trie(t, &t->trie_raw, 0) || build_trie(t, &t->trie_norm, 1) ? -1 : 0;
}

/* ---- BOS / EOS ---------------------------------------------------------------------------- */

static int32_t token_id(const llmq_tokenizer *t, const char *s)
{
    if (!s)
        return -1;
    for (size_t i = 0; i < t->n_added; i++)
        if (t->added[i].id >= 0 && strcmp(t->added[i].s, s) == 0)
            return t->added[i].id;
    return tk_bpe_lookup(&t->bpe, s, strlen(s));
}

/* The TemplateProcessing post-processor (alone or inside a Sequence), or NULL. */
static const cJSON *find_template(const cJSON *pp)
{
    const char *type = tk_jstr(pp, "type");
    if (type && strcmp(type, "TemplateProcessing") == 0)
        return pp;
    if (type && strcmp(type, "Sequence") == 0) {
        const cJSON *list = cJSON_GetObjectItemCaseSensitive(pp, "processors");
        for (const cJSON *e = list ? list->child : NULL; e; e = e->next)
            if (find_template(e))
                return find_template(e);
    }
    return NULL;
}

/* Without add_bos_token in tokenizer_config.json, BOS is added when the
 * post-processor's "single" template starts with a special token; with no
 * post-processor at all, by family (SentencePiece yes, byte-level no). */
static void bos_from_template(llmq_tokenizer *t, const cJSON *pp, int *add, int32_t *id)
{
    const cJSON *tpl = find_template(pp);
    if (!tpl) {
        int bytelevel = 0;
        for (size_t i = 0; i < t->n_pre; i++)
            bytelevel |= t->pre[i].kind == TK_PT_BYTELEVEL;
        *add = (!pp || cJSON_IsNull(pp)) && !bytelevel;
        if (*add && *id < 0)
            *id = token_id(t, "<s>");
        return;
    }
    const cJSON *first = cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(tpl, "single"), 0);
    const cJSON *sp = cJSON_GetObjectItemCaseSensitive(first, "SpecialToken");
    *add = sp != NULL;
    if (!sp || *id >= 0)
        return;
    const char *name = tk_jstr(sp, "id");
    const cJSON *st = cJSON_GetObjectItemCaseSensitive(
        cJSON_GetObjectItemCaseSensitive(tpl, "special_tokens"), name ? name : "");
    const cJSON *ids = cJSON_GetObjectItemCaseSensitive(st, "ids");
    if (cJSON_IsNumber(cJSON_GetArrayItem(ids, 0)))
        *id = (int32_t)cJSON_GetArrayItem(ids, 0)->valuedouble;
    else
        *id = token_id(t, name);
}

static int load_config(llmq_tokenizer *t, const char *dir, const cJSON *post_processor)
{
    char *path = llmq_path_join(dir, "tokenizer_config.json");
    if (!path)
        return llmq_fail("out of memory");
    cJSON *cfg = NULL;
    if (llmq_file_exists(path)) {
        char *data;
        size_t len;
        if (llmq_read_file(path, &data, &len)) {
            free(path);
            return -1;
        }
        const char *end = NULL;
        cfg = cJSON_ParseWithLengthOpts(data, len, &end, 0);
        if (!cfg) {
            llmq_fail("%s: invalid JSON near byte %zu", path, end ? (size_t)(end - data) : 0);
            free(data);
            free(path);
            return -1;
        }
        free(data);
    }
    free(path);
    t->bos_id = token_id(t, jtoken(cfg, "bos_token"));
    t->eos_id = token_id(t, jtoken(cfg, "eos_token"));
    const cJSON *add = cJSON_GetObjectItemCaseSensitive(cfg, "add_bos_token");
    if (cJSON_IsBool(add))
        t->add_bos = cJSON_IsTrue(add);
    else
        bos_from_template(t, post_processor, &t->add_bos, &t->bos_id);
    if (t->bos_id < 0)
        t->add_bos = 0;
    cJSON_Delete(cfg);
    return 0;
}

/* ---- entry points ---------------------------------------------------------------------------- */

static int load_json(llmq_tokenizer *t, const cJSON *root, const char *dir)
{
    const char *path = t->path;
    if (!cJSON_IsObject(root))
        return llmq_fail("%s: not a JSON object", path);
    if (load_model(&t->bpe, cJSON_GetObjectItemCaseSensitive(root, "model"), path) ||
        load_added(t, cJSON_GetObjectItemCaseSensitive(root, "added_tokens"), path) ||
        tk_load_normalizer(t, cJSON_GetObjectItemCaseSensitive(root, "normalizer"), path) ||
        tk_load_pretok(t, cJSON_GetObjectItemCaseSensitive(root, "pre_tokenizer"), path) ||
        tk_load_decoder(t, cJSON_GetObjectItemCaseSensitive(root, "decoder"), path))
        return -1;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "decoder");
    t->has_decoder = dec && !cJSON_IsNull(dec);
    assign_added_ids(t);
    if (tk_build_tries(t) || build_id_table(t))
        return llmq_wrap("%s", path);
    tk_bytemap_init(&t->bytemap);
    return load_config(t, dir, cJSON_GetObjectItemCaseSensitive(root, "post_processor"));
}

int tok_load(llmq_tokenizer **out, const char *dir)
{
    *out = NULL;
    llmq_tokenizer *t = calloc(1, sizeof *t);
    if (!t)
        return llmq_fail("out of memory");
    t->bos_id = t->eos_id = -1;
    t->path = llmq_path_join(dir, "tokenizer.json");
    char *data = NULL;
    size_t len = 0;
    if (!t->path || llmq_read_file(t->path, &data, &len)) {
        if (!t->path)
            llmq_fail("out of memory");
        tok_free(t);
        return -1;
    }
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(data, len, &end, 0);
    int rc;
    if (!root)
        rc = llmq_fail("%s: invalid JSON near byte %zu", t->path,
                       end ? (size_t)(end - data) : (size_t)0);
    else
        rc = load_json(t, root, dir);
    cJSON_Delete(root);
    free(data);
    if (rc) {
        tok_free(t);
        return -1;
    }
    *out = t;
    return 0;
}

void tok_free(llmq_tokenizer *t)
{
    if (!t)
        return;
    tk_bpe_free(&t->bpe);
    free(t->id_tok);
    for (size_t i = 0; i < t->n_added; i++) {
        free(t->added[i].s);
        free(t->added[i].ns);
    }
    free(t->added);
    free(t->trie_raw.idx);
    free(t->trie_norm.idx);
    pcre2_code_free(t->word_re);
    for (size_t i = 0; i < t->n_norm; i++) {
        free(t->norm[i].a);
        free(t->norm[i].b);
    }
    free(t->norm);
    for (size_t i = 0; i < t->n_pre; i++)
        pcre2_code_free(t->pre[i].re);
    free(t->pre);
    for (size_t i = 0; i < t->n_dec; i++) {
        free(t->dec[i].a);
        free(t->dec[i].b);
    }
    free(t->dec);
    free(t->path);
    free(t);
}
