/* Private to formats/tokenizer*.c: the parts llmq_tokenizer is built from.
 *
 *   tokenizer_text.c    growable arrays, an arena, UTF-8 helpers, literal
 *                       replace, GPT-2 byte map
 *   tokenizer_bpe.c     vocab / merge hash tables and the BPE merge loop
 *   tokenizer_load.c    tokenizer.json + tokenizer_config.json -> this struct
 *   tokenizer_steps.c   normalizer / pre-tokenizer / decoder JSON -> steps
 *   tokenizer.c         the encode pipeline (added tokens, normalizer,
 *                       pre-tokenizers, model)
 *   tokenizer_decode.c  the decoders
 *
 * Every stage mirrors Hugging Face tokenizers (the Rust crate) closely
 * enough that ids agree token for token; comments name the HF behaviour
 * being reproduced wherever it is not the obvious one. */
#ifndef LLMQ_TOKENIZER_IMPL_H
#define LLMQ_TOKENIZER_IMPL_H

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>
#include <stddef.h>
#include <stdint.h>

#include "tokenizer.h"

/* ---- growable arrays and an arena (tokenizer_text.c) --------------------- */

typedef struct {
    int32_t *v;
    size_t n, cap;
} tk_ids;

int tk_ids_push(tk_ids *a, int32_t id);

typedef struct {
    const char *s;
    size_t len;
} tk_str;

typedef struct {
    tk_str *v;
    size_t n, cap;
} tk_strs;

int tk_strs_push(tk_strs *a, const char *s, size_t len);

/* Bump allocator for the strings one encode/decode call creates: blocks never
 * move, so pointers stay valid until tk_arena_free, and freeing is one walk. */
typedef struct tk_block tk_block;
typedef struct {
    tk_block *head;
} tk_arena;

char *tk_arena_alloc(tk_arena *a, size_t n);
void tk_arena_free(tk_arena *a);

/* Non-overlapping, leftmost occurrences of pat (plen > 0) in s, and s
 * copied to dst with each replaced by rep (as Rust's str::replace). */
size_t tk_count(const char *s, size_t n, const char *pat, size_t plen);
size_t tk_replace_all(char *dst, const char *s, size_t n, const char *pat, size_t plen,
                      const char *rep, size_t rlen);

/* ---- UTF-8 ------------------------------------------------------------- */

/* Byte length of the character at s (n > 0 bytes available): 1..4 for a
 * well-formed sequence, 1 for a byte that does not start one (so malformed
 * input is walked byte by byte, never rejected). */
size_t tk_utf8_len(const char *s, size_t n);
/* Code point of the well-formed sequence at s of length len (from tk_utf8_len);
 * for a malformed byte, the byte value | 0x110000 (matches no real char). */
uint32_t tk_utf8_cp(const char *s, size_t len);
int tk_utf8_valid(const char *s, size_t n);
/* Write s to out with every maximal ill-formed subpart replaced by U+FFFD,
 * as Rust's String::from_utf8_lossy; out needs 3 * n bytes. Returns length. */
size_t tk_utf8_lossy(const char *s, size_t n, char *out);
/* Rust char::is_whitespace (Unicode White_Space). */
int tk_is_space(uint32_t cp);

/* ---- GPT-2 byte <-> unicode map ------------------------------------------ */

/* GPT-2 maps each byte to a printable code point so BPE never sees control
 * characters or spaces: bytes that are printable Latin-1 map to themselves,
 * the other 68 to U+0100.. in byte order. */
typedef struct {
    char enc[256][2];     /* UTF-8 of the code point for each byte */
    uint8_t enc_len[256]; /* 1 or 2 */
    int16_t dec[324];     /* code point -> byte, -1 if none */
} tk_bytemap;

void tk_bytemap_init(tk_bytemap *m);

/* ---- BPE model (tokenizer_bpe.c) ---------------------------------------- */

typedef struct {
    const char *s;
    uint32_t len;
    int32_t id;
} tk_vent;

typedef struct {
    tk_vent *ent; /* vocab entries, in file order */
    size_t n_ent;
    size_t n_keys;   /* distinct strings (HF's vocab size) */
    uint32_t *vslot; /* open addressing: entry index + 1, 0 = empty */
    size_t vcap;     /* power of two */
    char *strings;   /* storage for every entry's text */
    size_t str_used, str_cap;

    uint64_t *mkey; /* (left id << 32 | right id), UINT64_MAX = empty */
    uint32_t *mrank;
    int32_t *mnew;
    size_t mcap, n_merges;

    int32_t max_id; /* largest id in the vocab, -1 if empty */
    int has_unk;    /* unk_token given in the file */
    int32_t unk_id; /* its id, -1 if the vocab lacks it (an error when used) */
    char *unk_name;
    int byte_fallback, fuse_unk, ignore_merges;
    int32_t byte_id[256]; /* id of "<0xNN>", -1 if absent */
} tk_bpe;

/* Per-call scratch of the merge loop, grown as needed and reused across the
 * words of one encode call. */
typedef struct {
    void *sym;
    size_t sym_cap;
    void *heap;
    size_t heap_cap;
} tk_bpe_scratch;

int tk_bpe_init_vocab(tk_bpe *b, size_t n, size_t text_bytes);
/* Add entry i of n (strings copied). Call tk_bpe_index afterwards. */
void tk_bpe_set_entry(tk_bpe *b, size_t i, const char *s, size_t len, int32_t id);
int tk_bpe_index(tk_bpe *b);
int32_t tk_bpe_lookup(const tk_bpe *b, const char *s, size_t len);
int tk_bpe_init_merges(tk_bpe *b, size_t n);
/* Later duplicates of a pair replace earlier ones, like HF's HashMap collect. */
void tk_bpe_add_merge(tk_bpe *b, int32_t left, int32_t right, uint32_t rank, int32_t new_id);
void tk_bpe_free(tk_bpe *b);
void tk_bpe_scratch_free(tk_bpe_scratch *sc);
/* Tokenize one pre-token w (UTF-8) and append its ids to out. */
int tk_bpe_word(const tk_bpe *b, const char *w, size_t n, tk_bpe_scratch *sc, tk_ids *out);

/* ---- pipeline description (filled by tokenizer_load.c) ----------------- */

/* NFC / NFD / NFKC / NFKD are Unicode normalization forms (tokenizer.c,
 * through GNU libunistring); they have no arguments. */
enum { TK_NORM_PREPEND, TK_NORM_REPLACE, TK_NORM_NFC, TK_NORM_NFD, TK_NORM_NFKC, TK_NORM_NFKD };
typedef struct {
    int kind;
    char *a; /* PREPEND: text to prepend; REPLACE: pattern */
    size_t alen;
    char *b; /* REPLACE: replacement */
    size_t blen;
} tk_norm;

enum { TK_PT_SPLIT, TK_PT_BYTELEVEL, TK_PT_METASPACE };
enum {
    TK_SPLIT_REMOVED,
    TK_SPLIT_ISOLATED,
    TK_SPLIT_MERGED_PREV,
    TK_SPLIT_MERGED_NEXT,
    TK_SPLIT_CONTIGUOUS
};
enum { TK_PREPEND_ALWAYS, TK_PREPEND_FIRST, TK_PREPEND_NEVER };
typedef struct {
    int kind;
    pcre2_code *re;       /* SPLIT; BYTELEVEL with use_regex (else NULL) */
    int behavior, invert; /* SPLIT */
    int add_prefix_space; /* BYTELEVEL */
    char repl[8];         /* METASPACE: replacement char, UTF-8 */
    size_t repl_len;
    int prepend_scheme, split;
} tk_pretok;

enum {
    TK_DEC_REPLACE,
    TK_DEC_BYTEFALLBACK,
    TK_DEC_FUSE,
    TK_DEC_STRIP,
    TK_DEC_BYTELEVEL,
    TK_DEC_METASPACE
};
typedef struct {
    int kind;
    char *a; /* REPLACE pattern; STRIP / METASPACE char */
    size_t alen;
    char *b; /* REPLACE content */
    size_t blen;
    size_t start, stop; /* STRIP */
    int prepend_scheme; /* METASPACE */
} tk_dec;

typedef struct {
    char *s; /* content as written in the file */
    size_t len;
    char *ns; /* content after the normalizer (matched on normalized text) */
    size_t nlen;
    int32_t id; /* as HF numbers it (see assign_added_ids), -1 if empty */
    int lstrip, rstrip, single_word, normalized, special;
} tk_added;

/* Added tokens of one pass (raw or normalized), bucketed by first byte and
 * longest first within a bucket, for leftmost-longest matching. */
typedef struct {
    uint32_t start[257];
    uint32_t *idx;
} tk_trie;

struct llmq_tokenizer {
    char *path; /* tokenizer.json, for messages */
    tk_bpe bpe;
    tk_str *id_tok; /* id -> text for decoding (added tokens win) */
    int32_t n_vocab;

    tk_added *added;
    size_t n_added;
    tk_trie trie_raw, trie_norm;
    pcre2_code *word_re; /* Rust's is_alphanumeric || '_', for single_word */

    tk_norm *norm;
    size_t n_norm;
    tk_pretok *pre;
    size_t n_pre;
    tk_dec *dec;
    size_t n_dec;
    int has_decoder;

    tk_bytemap bytemap;
    int32_t bos_id, eos_id;
    int add_bos;
};

/* tokenizer_steps.c: cJSON helpers (NULL-safe) and the step loaders. */
struct cJSON;
const char *tk_jstr(const struct cJSON *o, const char *key);
int tk_jbool(const struct cJSON *o, const char *key, int dflt);
const char *tk_jtype(const struct cJSON *o);
int tk_push(void **arr, size_t *n, size_t elem, const void *item);
char *tk_dup(const char *s, size_t *len);
int tk_load_normalizer(llmq_tokenizer *t, const struct cJSON *n, const char *path);
int tk_load_pretok(llmq_tokenizer *t, const struct cJSON *n, const char *path);
int tk_load_decoder(llmq_tokenizer *t, const struct cJSON *n, const char *path);

/* tokenizer.c: apply the normalizer to s (used on added tokens at load). */
int tk_normalize(const llmq_tokenizer *t, const char *s, size_t n, tk_arena *ar, const char **out,
                 size_t *out_len);
/* tokenizer_load.c */
int tk_build_tries(llmq_tokenizer *t);

#endif
