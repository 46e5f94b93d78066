/* BPE model: vocab and merges in open-addressing hash tables, and the merge
 * loop of HF tokenizers' Word::merge_all.
 *
 * SentencePiece-style tokenizers have no pre-tokenizer, so a whole document
 * (1.3 MB of WikiText) arrives here as one word. The merge loop therefore
 * keeps a doubly linked list of symbols and a min-heap of candidate pairs
 * keyed by (merge rank, position): O(n log n) instead of rescanning the
 * word after every merge. Ordering and the stale-entry check are HF's:
 * lowest rank first, leftmost on ties, and a popped entry is applied only
 * if its pair still exists and still merges into the same new id. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../src/error.h"
#include "tokenizer_impl.h"

static uint64_t hash_bytes(const char *s, size_t n)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < n; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h ^ (h >> 29);
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 30; /* splitmix64 finalizer */
    x *= 0xbf58476d1ce4e5b9ull;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static size_t pow2_at_least(size_t n)
{
    size_t c = 16;
    while (c < n)
        c *= 2;
    return c;
}

/* ---- vocab ------------------------------------------------------------------ */

int tk_bpe_init_vocab(tk_bpe *b, size_t n, size_t text_bytes)
{
    b->ent = calloc(n ? n : 1, sizeof *b->ent);
    b->strings = malloc(text_bytes + n + 1);
    b->vcap = pow2_at_least(2 * n + 1);
    b->vslot = calloc(b->vcap, sizeof *b->vslot);
    b->n_ent = n;
    b->str_used = 0;
    b->str_cap = text_bytes + n + 1;
    b->max_id = -1;
    if (!b->ent || !b->strings || !b->vslot)
        return llmq_fail("out of memory for a vocab of %zu tokens", n);
    return 0;
}

void tk_bpe_set_entry(tk_bpe *b, size_t i, const char *s, size_t len, int32_t id)
{
    char *dst = b->strings + b->str_used;
    memcpy(dst, s, len);
    dst[len] = 0;
    b->str_used += len + 1;
    b->ent[i].s = dst;
    b->ent[i].len = (uint32_t)len;
    b->ent[i].id = id;
}

int32_t tk_bpe_lookup(const tk_bpe *b, const char *s, size_t len)
{
    if (!b->vslot)
        return -1;
    size_t mask = b->vcap - 1;
    for (size_t h = hash_bytes(s, len) & mask;; h = (h + 1) & mask) {
        uint32_t e = b->vslot[h];
        if (!e)
            return -1;
        const tk_vent *v = &b->ent[e - 1];
        if (v->len == len && memcmp(v->s, s, len) == 0)
            return v->id;
    }
}

int tk_bpe_index(tk_bpe *b)
{
    size_t mask = b->vcap - 1;
    for (size_t i = 0; i < b->n_ent; i++) {
        const tk_vent *v = &b->ent[i];
        size_t h = hash_bytes(v->s, v->len) & mask;
        /* A repeated key replaces the earlier one (serde_json keeps the last). */
        while (b->vslot[h]) {
            const tk_vent *o = &b->ent[b->vslot[h] - 1];
            if (o->len == v->len && memcmp(o->s, v->s, v->len) == 0)
                break;
            h = (h + 1) & mask;
        }
        b->n_keys += !b->vslot[h];
        b->vslot[h] = (uint32_t)(i + 1);
        if (v->id > b->max_id)
            b->max_id = v->id;
    }
    for (int c = 0; c < 256; c++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", c);
        b->byte_id[c] = tk_bpe_lookup(b, name, 6);
    }
    return 0;
}

/* ---- merges ------------------------------------------------------------------ */

int tk_bpe_init_merges(tk_bpe *b, size_t n)
{
    b->mcap = pow2_at_least(2 * n + 1);
    b->mkey = malloc(b->mcap * sizeof *b->mkey);
    b->mrank = malloc(b->mcap * sizeof *b->mrank);
    b->mnew = malloc(b->mcap * sizeof *b->mnew);
    if (!b->mkey || !b->mrank || !b->mnew)
        return llmq_fail("out of memory for %zu merges", n);
    memset(b->mkey, 0xFF, b->mcap * sizeof *b->mkey);
    return 0;
}

void tk_bpe_add_merge(tk_bpe *b, int32_t left, int32_t right, uint32_t rank, int32_t new_id)
{
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    size_t mask = b->mcap - 1, h = hash_u64(key) & mask;
    while (b->mkey[h] != UINT64_MAX && b->mkey[h] != key)
        h = (h + 1) & mask;
    if (b->mkey[h] == UINT64_MAX)
        b->n_merges++;
    b->mkey[h] = key;
    b->mrank[h] = rank;
    b->mnew[h] = new_id;
}

static int merge_get(const tk_bpe *b, int32_t left, int32_t right, uint32_t *rank, int32_t *new_id)
{
    if (!b->mkey)
        return 0;
    uint64_t key = ((uint64_t)(uint32_t)left << 32) | (uint32_t)right;
    size_t mask = b->mcap - 1;
    for (size_t h = hash_u64(key) & mask; b->mkey[h] != UINT64_MAX; h = (h + 1) & mask) {
        if (b->mkey[h] == key) {
            *rank = b->mrank[h];
            *new_id = b->mnew[h];
            return 1;
        }
    }
    return 0;
}

void tk_bpe_free(tk_bpe *b)
{
    free(b->ent);
    free(b->strings);
    free(b->vslot);
    free(b->mkey);
    free(b->mrank);
    free(b->mnew);
    free(b->unk_name);
    memset(b, 0, sizeof *b);
}

/* ---- the merge loop -------------------------------------------------------------- */

typedef struct {
    int32_t id, prev, next, alive;
} sym_t;

/* Heap key: rank in the high half, symbol position in the low half, so the
 * smallest key is the lowest rank and, among equal ranks, the leftmost. */
typedef struct {
    uint64_t key;
    int32_t new_id;
} cand_t;

/* A 4-ary min-heap (HF uses one too): half the depth of a binary heap, and
 * logical index 0 lives in slot 3 of a 64-byte-aligned array so the four
 * children of a node (slots 4i+4..4i+7) share one cache line. The 1.3 MB
 * single-word case is bound by these cache misses. */
enum { HEAP_PAD = 3 };

typedef struct {
    cand_t *v; /* allocation; entries start at v + HEAP_PAD */
    size_t n, cap;
} heap_t;

static int heap_grow(heap_t *h)
{
    size_t nc = h->cap ? h->cap * 2 : 1024; /* a multiple of 4 slots = 64 bytes */
    cand_t *nv = aligned_alloc(64, nc * sizeof *nv);
    if (!nv)
        return -1;
    if (h->v)
        memcpy(nv, h->v, (h->n + HEAP_PAD) * sizeof *nv);
    free(h->v);
    h->v = nv;
    h->cap = nc;
    return 0;
}

static int heap_push(heap_t *h, uint64_t key, int32_t new_id)
{
    if (h->n + HEAP_PAD >= h->cap && heap_grow(h))
        return -1;
    cand_t *a = h->v + HEAP_PAD;
    size_t i = h->n++;
    while (i > 0) {
        size_t p = (i - 1) / 4;
        if (a[p].key <= key)
            break;
        a[i] = a[p];
        i = p;
    }
    a[i].key = key;
    a[i].new_id = new_id;
    return 0;
}

static cand_t heap_pop(heap_t *h)
{
    cand_t *a = h->v + HEAP_PAD;
    cand_t top = a[0], last = a[--h->n];
    size_t i = 0, n = h->n;
    for (;;) {
        size_t c = 4 * i + 1, best = c;
        if (c >= n)
            break;
        size_t end = c + 4 < n ? c + 4 : n;
        for (size_t k = c + 1; k < end; k++)
            if (a[k].key < a[best].key)
                best = k;
        if (last.key <= a[best].key)
            break;
        a[i] = a[best];
        i = best;
    }
    if (n)
        a[i] = last;
    return top;
}

static int push_pair(const tk_bpe *b, heap_t *h, const sym_t *s, int32_t left)
{
    uint32_t rank;
    int32_t new_id;
    if (!merge_get(b, s[left].id, s[s[left].next].id, &rank, &new_id))
        return 0;
    return heap_push(h, ((uint64_t)rank << 32) | (uint32_t)left, new_id);
}

static void sym_add(sym_t *s, size_t *n, int32_t id)
{
    s[*n].id = id;
    s[*n].prev = (int32_t)*n - 1;
    s[*n].next = -1;
    s[*n].alive = 1;
    if (*n)
        s[*n - 1].next = (int32_t)*n;
    (*n)++;
}

/* Initial symbols, one per character, as HF's BPE::merge_word: a character
 * missing from the vocab becomes its <0xNN> byte tokens (byte_fallback, all
 * bytes must exist) or else the unk token, consecutive unks fused into one
 * when fuse_unk. The pending unk is only flushed by a known character or at
 * the end, so byte-fallback tokens can overtake it: HF does the same. */
static int split_symbols(const tk_bpe *b, const char *w, size_t n, sym_t *s, size_t *ns)
{
    int pending_unk = 0;
    *ns = 0;
    for (size_t i = 0; i < n;) {
        size_t k = tk_utf8_len(w + i, n - i);
        int32_t id = tk_bpe_lookup(b, w + i, k);
        if (id >= 0) {
            if (pending_unk)
                sym_add(s, ns, b->unk_id);
            pending_unk = 0;
            sym_add(s, ns, id);
        } else {
            int bytes_ok = b->byte_fallback;
            for (size_t j = 0; bytes_ok && j < k; j++)
                bytes_ok = b->byte_id[(unsigned char)w[i + j]] >= 0;
            if (bytes_ok) {
                for (size_t j = 0; j < k; j++)
                    sym_add(s, ns, b->byte_id[(unsigned char)w[i + j]]);
            } else if (b->has_unk) {
                if (b->unk_id < 0)
                    return llmq_fail("unk token \"%s\" is not in the vocabulary", b->unk_name);
                if (pending_unk && !b->fuse_unk)
                    sym_add(s, ns, b->unk_id);
                pending_unk = 1;
            }
            /* no unk token configured: HF drops the character */
        }
        i += k;
    }
    if (pending_unk)
        sym_add(s, ns, b->unk_id);
    return 0;
}

static int merge_all(const tk_bpe *b, sym_t *s, size_t ns, heap_t *h)
{
    h->n = 0;
    for (size_t i = 0; i + 1 < ns; i++)
        if (push_pair(b, h, s, (int32_t)i))
            return -1;
    while (h->n) {
        cand_t top = heap_pop(h);
        int32_t pos = (int32_t)(uint32_t)top.key;
        if (!s[pos].alive || s[pos].next < 0)
            continue;
        int32_t right = s[pos].next;
        uint32_t rank;
        int32_t new_id;
        if (!merge_get(b, s[pos].id, s[right].id, &rank, &new_id) || new_id != top.new_id)
            continue; /* stale: this pair changed since the entry was queued */
        s[pos].id = new_id;
        s[pos].next = s[right].next;
        s[right].alive = 0;
        if (s[pos].next >= 0)
            s[s[pos].next].prev = pos;
        if (s[pos].prev >= 0 && push_pair(b, h, s, s[pos].prev))
            return -1;
        if (s[pos].next >= 0 && push_pair(b, h, s, pos))
            return -1;
    }
    return 0;
}

int tk_bpe_word(const tk_bpe *b, const char *w, size_t n, tk_bpe_scratch *sc, tk_ids *out)
{
    if (n == 0)
        return 0;
    /* ignore_merges (Llama-3): a pre-token that is itself in the vocab is
     * emitted as is, even if the merges would not rebuild it. */
    if (b->ignore_merges) {
        int32_t id = tk_bpe_lookup(b, w, n);
        if (id >= 0)
            return tk_ids_push(out, id) ? llmq_fail("out of memory") : 0;
    }
    if (n >= INT32_MAX)
        return llmq_fail("pre-token of %zu bytes is too long", n);
    /* At most one symbol per byte, plus a trailing unk. */
    if (sc->sym_cap < n + 1) {
        free(sc->sym);
        sc->sym = malloc((n + 1) * sizeof(sym_t));
        sc->sym_cap = sc->sym ? n + 1 : 0;
        if (!sc->sym)
            return llmq_fail("out of memory");
    }
    sym_t *s = sc->sym;
    size_t ns;
    if (split_symbols(b, w, n, s, &ns))
        return -1;
    heap_t h = {sc->heap, 0, sc->heap_cap};
    int rc = merge_all(b, s, ns, &h);
    sc->heap = h.v;
    sc->heap_cap = h.cap;
    if (rc)
        return llmq_fail("out of memory");
    for (size_t i = 0; i < ns; i++)
        if (s[i].alive && tk_ids_push(out, s[i].id))
            return llmq_fail("out of memory");
    return 0;
}

void tk_bpe_scratch_free(tk_bpe_scratch *sc)
{
    free(sc->sym);
    free(sc->heap);
    memset(sc, 0, sizeof *sc);
}
