/* Small text utilities for the tokenizer: growable arrays, a bump arena,
 * UTF-8 walking / validation / lossy repair, and GPT-2's byte map. */
#include <stdlib.h>
#include <string.h>

#include "tokenizer_impl.h"

/* ---- growable arrays ---------------------------------------------------- */

static int grow(void **v, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t nc = *cap ? *cap : 16;
    while (nc < need)
        nc *= 2;
    void *nv = realloc(*v, nc * elem);
    if (!nv)
        return -1;
    *v = nv;
    *cap = nc;
    return 0;
}

int tk_ids_push(tk_ids *a, int32_t id)
{
    if (grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v))
        return -1;
    a->v[a->n++] = id;
    return 0;
}

int tk_strs_push(tk_strs *a, const char *s, size_t len)
{
    if (grow((void **)&a->v, &a->cap, a->n + 1, sizeof *a->v))
        return -1;
    a->v[a->n].s = s;
    a->v[a->n].len = len;
    a->n++;
    return 0;
}

/* ---- literal search and replace ------------------------------------------------ */

size_t tk_count(const char *s, size_t n, const char *pat, size_t plen)
{
    size_t c = 0;
    for (const char *p = s, *end = s + n; (p = memmem(p, (size_t)(end - p), pat, plen)); p += plen)
        c++;
    return c;
}

/* Copy s to dst with every (non-overlapping, leftmost) pat replaced by rep. */
size_t tk_replace_all(char *dst, const char *s, size_t n, const char *pat, size_t plen,
                      const char *rep, size_t rlen)
{
    size_t o = 0;
    const char *p = s, *end = s + n, *hit;
    while ((hit = memmem(p, (size_t)(end - p), pat, plen))) {
        memcpy(dst + o, p, (size_t)(hit - p));
        o += (size_t)(hit - p);
        memcpy(dst + o, rep, rlen);
        o += rlen;
        p = hit + plen;
    }
    memcpy(dst + o, p, (size_t)(end - p));
    return o + (size_t)(end - p);
}

/* ---- arena ---------------------------------------------------------------- */

struct tk_block {
    tk_block *next;
    size_t used, cap;
    max_align_t data[];
};

char *tk_arena_alloc(tk_arena *a, size_t n)
{
    tk_block *b = a->head;
    if (!b || b->cap - b->used < n) {
        size_t cap = n > (1u << 16) ? n : (1u << 16);
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->next = a->head;
        b->used = 0;
        b->cap = cap;
        a->head = b;
    }
    char *p = (char *)b->data + b->used;
    b->used += n;
    return p;
}

void tk_arena_free(tk_arena *a)
{
    while (a->head) {
        tk_block *next = a->head->next;
        free(a->head);
        a->head = next;
    }
}

/* ---- UTF-8 ---------------------------------------------------------------- */

/* Length of the longest prefix at s that could start a well-formed sequence
 * (Unicode table 3-7), at least 1; *ok says whether it is complete. The
 * prefix length is exactly the "maximal subpart" that one U+FFFD replaces. */
static size_t utf8_scan(const unsigned char *s, size_t n, int *ok)
{
    unsigned c = s[0], lo = 0x80, hi = 0xBF;
    size_t need;
    *ok = 0;
    if (c < 0x80) {
        *ok = 1;
        return 1;
    }
    if (c >= 0xC2 && c <= 0xDF) {
        need = 1;
    } else if (c >= 0xE0 && c <= 0xEF) {
        need = 2;
        lo = c == 0xE0 ? 0xA0 : 0x80;
        hi = c == 0xED ? 0x9F : 0xBF;
    } else if (c >= 0xF0 && c <= 0xF4) {
        need = 3;
        lo = c == 0xF0 ? 0x90 : 0x80;
        hi = c == 0xF4 ? 0x8F : 0xBF;
    } else {
        return 1;
    }
    for (size_t i = 1; i <= need; i++) {
        if (i >= n || s[i] < lo || s[i] > hi)
            return i;
        lo = 0x80;
        hi = 0xBF;
    }
    *ok = 1;
    return need + 1;
}

size_t tk_utf8_len(const char *s, size_t n)
{
    int ok;
    size_t k = utf8_scan((const unsigned char *)s, n, &ok);
    return ok ? k : 1;
}

uint32_t tk_utf8_cp(const char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    if (len == 1)
        return u[0] < 0x80 ? u[0] : (u[0] | 0x110000u);
    uint32_t cp = u[0] & (0x7Fu >> len);
    for (size_t i = 1; i < len; i++)
        cp = (cp << 6) | (u[i] & 0x3Fu);
    return cp;
}

int tk_utf8_valid(const char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        int ok;
        i += utf8_scan((const unsigned char *)s + i, n - i, &ok);
        if (!ok)
            return 0;
    }
    return 1;
}

size_t tk_utf8_lossy(const char *s, size_t n, char *out)
{
    size_t i = 0, o = 0;
    while (i < n) {
        int ok;
        size_t k = utf8_scan((const unsigned char *)s + i, n - i, &ok);
        if (ok) {
            memcpy(out + o, s + i, k);
            o += k;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
        }
        i += k;
    }
    return o;
}

int tk_is_space(uint32_t cp)
{
    return (cp >= 9 && cp <= 13) || cp == 32 || cp == 0x85 || cp == 0xA0 || cp == 0x1680 ||
           (cp >= 0x2000 && cp <= 0x200A) || cp == 0x2028 || cp == 0x2029 || cp == 0x202F ||
           cp == 0x205F || cp == 0x3000;
}

/* ---- GPT-2 byte map -------------------------------------------------------- */

void tk_bytemap_init(tk_bytemap *m)
{
    int next = 256;
    for (int i = 0; i < 324; i++)
        m->dec[i] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE);
        int cp = printable ? b : next++;
        if (cp < 0x80) {
            m->enc[b][0] = (char)cp;
            m->enc_len[b] = 1;
        } else {
            m->enc[b][0] = (char)(0xC0 | (cp >> 6));
            m->enc[b][1] = (char)(0x80 | (cp & 0x3F));
            m->enc_len[b] = 2;
        }
        m->dec[cp] = (int16_t)b;
    }
}
