/* safetensors reader and writer.
 *
 * Reading maps the file and validates the whole header up front, so that
 * every pointer handed out afterwards is known to lie inside the mapping:
 * callers never need bounds checks of their own. The rules are those of the
 * reference (Rust) implementation: header length at most 100,000,000 bytes,
 * a JSON object that starts with '{', tensors whose byte ranges tile the
 * data area exactly (no overlap, no gap, nothing after the last tensor), and
 * byte lengths equal to numel x dtype size.
 *
 * Writing records pointers only; the file is produced in one pass at commit
 * time through llmq_atomic_*, so a failure never leaves a partial file. */
#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "../src/error.h"
#include "../src/fileio.h"

#define ST_MAX_HEADER 100000000ull /* same limit as the Rust crate */
#define ST_MAX_EXACT 9007199254740992.0 /* 2^53: larger JSON numbers lose digits in a double */
#define ST_METADATA_KEY "__metadata__"
#define ST_SINGLE_NAME "model.safetensors"
#define ST_INDEX_NAME "model.safetensors.index.json"

/* ------------------------------------------------------------------------ */
/* name -> int table: open addressing, linear probing, power-of-two size.
 * Names are borrowed (the owner keeps them alive). */

typedef struct {
    const char *name; /* NULL = empty slot */
    uint32_t hash;
    int value;
} name_slot;

typedef struct {
    name_slot *slots;
    size_t cap; /* power of two, or 0 */
    size_t count;
} name_table;

static uint32_t name_hash(const char *s)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (; *s; s++)
        h = (h ^ (uint8_t)*s) * 16777619u;
    return h;
}

static void name_table_free(name_table *t)
{
    free(t->slots);
    memset(t, 0, sizeof *t);
}

/* Slot holding name, or the empty slot where it would go. */
static name_slot *name_table_slot(const name_table *t, const char *name, uint32_t h)
{
    size_t mask = t->cap - 1;
    for (size_t i = h & mask;; i = (i + 1) & mask) {
        name_slot *s = &t->slots[i];
        if (!s->name || (s->hash == h && strcmp(s->name, name) == 0))
            return s;
    }
}

static int name_table_grow(name_table *t, size_t min_cap)
{
    size_t cap = 16;
    while (cap < min_cap * 2)
        cap *= 2;
    if (cap <= t->cap)
        return 0;
    name_table bigger = {calloc(cap, sizeof(name_slot)), cap, t->count};
    if (!bigger.slots)
        return -1;
    for (size_t i = 0; i < t->cap; i++)
        if (t->slots[i].name)
            *name_table_slot(&bigger, t->slots[i].name, t->slots[i].hash) = t->slots[i];
    free(t->slots);
    *t = bigger;
    return 0;
}

/* Returns 0 when inserted, 1 when the name is already present (its value in
 * *existing), -1 when out of memory. */
static int name_table_put(name_table *t, const char *name, int value, int *existing)
{
    if (name_table_grow(t, t->count + 1))
        return -1;
    uint32_t h = name_hash(name);
    name_slot *s = name_table_slot(t, name, h);
    if (s->name) {
        if (existing)
            *existing = s->value;
        return 1;
    }
    *s = (name_slot){name, h, value};
    t->count++;
    return 0;
}

static int name_table_get(const name_table *t, const char *name)
{
    if (t->count == 0)
        return -1;
    const name_slot *s = name_table_slot(t, name, name_hash(name));
    return s->name ? s->value : -1;
}

/* ------------------------------------------------------------------------ */
/* UTF-8: JSON text must be valid UTF-8, and so must everything we write. */

/* Length of the valid UTF-8 sequence at p (at most n bytes), 0 if invalid.
 * Rejects overlong forms, surrogates and code points above U+10FFFF. */
static size_t utf8_seq_len(const uint8_t *p, size_t n)
{
    uint8_t c = p[0];
    size_t len;
    uint32_t cp, min;
    if (c < 0x80)
        return 1;
    if (c >= 0xc2 && c <= 0xdf) {
        len = 2, cp = c & 0x1f, min = 0x80;
    } else if (c >= 0xe0 && c <= 0xef) {
        len = 3, cp = c & 0x0f, min = 0x800;
    } else if (c >= 0xf0 && c <= 0xf4) {
        len = 4, cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (len > n)
        return 0;
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
        return 0;
    return len;
}

static int utf8_valid(const char *s)
{
    size_t n = strlen(s);
    for (size_t i = 0; i < n;) {
        size_t len = utf8_seq_len((const uint8_t *)s + i, n - i);
        if (!len)
            return 0;
        i += len;
    }
    return 1;
}

/* ------------------------------------------------------------------------ */
/* Reader */

struct st_file {
    char *path;
    const uint8_t *map; /* whole file image */
    size_t map_len;
    int mapped; /* 1: map is ours to munmap; 0: caller's buffer */
    cJSON *json; /* parsed header; tensor names and metadata point into it */
    st_tensor *tensors;
    int count;
    name_table names; /* tensor name -> index */
    name_table meta; /* metadata key -> child index in meta_values */
    const char **meta_values;
    int meta_count;
};

/* What the header parser needs while it works. */
typedef struct {
    st_file *f;
    const char *hdr; /* header bytes (not NUL-terminated) */
    size_t hdr_len;
    const uint8_t *data; /* data area */
    size_t data_len;
} st_parse;

static uint64_t load_le64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--)
        v = (v << 8) | p[i];
    return v;
}

static void store_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static int is_json_space(int c) { return c == ' ' || c == '\t' || c == '\n' || c == '\r'; }

/* A JSON number that is a non-negative integer a double holds exactly. On
 * failure returns a reason ("is negative", ...) for the caller's message. */
static const char *json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v))
        return "is not a number";
    double d = v->valuedouble;
    if (!isfinite(d) || d != floor(d))
        return "is not an integer";
    if (d < 0)
        return "is negative";
    if (d > ST_MAX_EXACT)
        return "is too large";
    *out = (uint64_t)d;
    return NULL;
}

/* The single member `key` of obj; fails if absent or present twice (cJSON
 * keeps duplicate keys, and a reader picking the first would silently
 * disagree with one picking the last). */
static int entry_member(const st_parse *p, const cJSON *obj, const char *name, const char *key,
                        const cJSON **out)
{
    const cJSON *found = NULL, *c;
    cJSON_ArrayForEach(c, obj)
    {
        if (c->string && strcmp(c->string, key) == 0) {
            if (found)
                return llmq_fail("%s: tensor '%s': \"%s\" appears twice", p->f->path, name, key);
            found = c;
        }
    }
    if (!found)
        return llmq_fail("%s: tensor '%s': missing \"%s\"", p->f->path, name, key);
    *out = found;
    return 0;
}

static int parse_dtype(const st_parse *p, const cJSON *entry, st_tensor *t)
{
    const cJSON *v = NULL;
    if (entry_member(p, entry, t->name, "dtype", &v))
        return -1;
    if (!cJSON_IsString(v))
        return llmq_fail("%s: tensor '%s': dtype is not a string", p->f->path, t->name);
    if (llmq_dtype_from_name(v->valuestring, &t->dtype))
        return llmq_fail("%s: tensor '%s': unknown dtype \"%s\"", p->f->path, t->name, v->valuestring);
    return 0;
}

static int parse_shape(const st_parse *p, const cJSON *entry, st_tensor *t)
{
    const cJSON *v = NULL, *dim;
    if (entry_member(p, entry, t->name, "shape", &v))
        return -1;
    if (!cJSON_IsArray(v))
        return llmq_fail("%s: tensor '%s': shape is not an array", p->f->path, t->name);
    int ndim = cJSON_GetArraySize(v);
    if (ndim > ST_MAX_DIMS)
        return llmq_fail("%s: tensor '%s': shape has %d dimensions (at most %d supported)", p->f->path,
                         t->name, ndim, ST_MAX_DIMS);
    int64_t numel = 1;
    int i = 0;
    cJSON_ArrayForEach(dim, v)
    {
        uint64_t d;
        const char *why = json_uint(dim, &d);
        if (why)
            return llmq_fail("%s: tensor '%s': shape[%d] %s", p->f->path, t->name, i, why);
        t->shape[i++] = (int64_t)d;
        if (__builtin_mul_overflow(numel, (int64_t)d, &numel))
            return llmq_fail("%s: tensor '%s': element count overflows", p->f->path, t->name);
    }
    t->ndim = ndim;
    t->numel = numel;
    return 0;
}

/* data_offsets -> t->data / t->nbytes; *begin kept for the layout check. */
static int parse_offsets(const st_parse *p, const cJSON *entry, st_tensor *t, uint64_t *begin)
{
    const cJSON *v = NULL;
    if (entry_member(p, entry, t->name, "data_offsets", &v))
        return -1;
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) != 2)
        return llmq_fail("%s: tensor '%s': data_offsets is not [begin, end]", p->f->path, t->name);
    uint64_t b, e;
    const char *why = json_uint(cJSON_GetArrayItem(v, 0), &b);
    if (why)
        return llmq_fail("%s: tensor '%s': data_offsets begin %s", p->f->path, t->name, why);
    why = json_uint(cJSON_GetArrayItem(v, 1), &e);
    if (why)
        return llmq_fail("%s: tensor '%s': data_offsets end %s", p->f->path, t->name, why);
    if (b > e)
        return llmq_fail("%s: tensor '%s': data_offsets begin %llu > end %llu", p->f->path, t->name,
                         (unsigned long long)b, (unsigned long long)e);
    if (e > p->data_len)
        return llmq_fail("%s: tensor '%s': data_offsets end %llu is past the end of the data area "
                         "(%zu bytes)",
                         p->f->path, t->name, (unsigned long long)e, p->data_len);
    t->data = p->data + b;
    t->nbytes = (size_t)(e - b);
    *begin = b;
    return 0;
}

static int check_byte_length(const st_parse *p, const st_tensor *t)
{
    uint64_t want;
    if (__builtin_mul_overflow((uint64_t)t->numel, (uint64_t)llmq_dtype_size(t->dtype), &want) ||
        want != t->nbytes) {
        char shape[ST_MAX_DIMS * 21 + 3];
        size_t n = 0;
        for (int i = 0; i < t->ndim; i++)
            n += (size_t)snprintf(shape + n, sizeof shape - n, "%s%lld", i ? "," : "", (long long)t->shape[i]);
        return llmq_fail("%s: tensor '%s': data_offsets give %zu bytes but %s [%s] needs %lld x %zu", p->f->path,
                         t->name, t->nbytes, llmq_dtype_name(t->dtype), shape, (long long)t->numel,
                         llmq_dtype_size(t->dtype));
    }
    return 0;
}

static int parse_tensor(const st_parse *p, const cJSON *entry, st_tensor *t, uint64_t *begin)
{
    t->name = entry->string;
    t->file = p->f->path;
    if (!cJSON_IsObject(entry))
        return llmq_fail("%s: tensor '%s': entry is not an object", p->f->path, t->name);
    if (parse_dtype(p, entry, t) || parse_shape(p, entry, t) || parse_offsets(p, entry, t, begin))
        return -1;
    return check_byte_length(p, t);
}

static int parse_metadata(const st_parse *p, const cJSON *obj)
{
    st_file *f = p->f;
    if (!cJSON_IsObject(obj))
        return llmq_fail("%s: %s is not an object", f->path, ST_METADATA_KEY);
    int n = cJSON_GetArraySize(obj);
    f->meta_values = calloc((size_t)n + 1, sizeof *f->meta_values);
    if (!f->meta_values)
        return llmq_fail("%s: out of memory", f->path);
    const cJSON *c;
    cJSON_ArrayForEach(c, obj)
    {
        if (!cJSON_IsString(c))
            return llmq_fail("%s: %s: value of \"%s\" is not a string", f->path, ST_METADATA_KEY, c->string);
        int rc = name_table_put(&f->meta, c->string, f->meta_count, NULL);
        if (rc < 0)
            return llmq_fail("%s: out of memory", f->path);
        if (rc > 0)
            return llmq_fail("%s: %s: key \"%s\" appears twice", f->path, ST_METADATA_KEY, c->string);
        f->meta_values[f->meta_count++] = c->valuestring;
    }
    return 0;
}

typedef struct {
    uint64_t begin, end;
    int index;
} st_range;

static int range_cmp(const void *a, const void *b)
{
    const st_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end)
        return x->end < y->end ? -1 : 1;
    return (x->index > y->index) - (x->index < y->index);
}

/* Sorted by begin, the ranges must run 0 .. data_len with each one starting
 * exactly where the previous ended: anything else is an overlap (two tensors
 * sharing bytes) or a hole / trailing bytes (data no tensor accounts for). */
static int check_layout(const st_parse *p, const uint64_t *begins)
{
    st_file *f = p->f;
    if (f->count == 0) {
        if (p->data_len)
            return llmq_fail("%s: %zu bytes of data after the header but no tensors", f->path, p->data_len);
        return 0;
    }
    st_range *r = malloc((size_t)f->count * sizeof *r);
    if (!r)
        return llmq_fail("%s: out of memory", f->path);
    for (int i = 0; i < f->count; i++)
        r[i] = (st_range){begins[i], begins[i] + f->tensors[i].nbytes, i};
    qsort(r, (size_t)f->count, sizeof *r, range_cmp);
    uint64_t pos = 0;
    int prev = -1, rc = 0;
    for (int i = 0; i < f->count && !rc; i++) {
        const char *name = f->tensors[r[i].index].name;
        if (r[i].begin < pos)
            rc = llmq_fail("%s: tensor '%s': bytes %llu..%llu overlap tensor '%s'", f->path, name,
                           (unsigned long long)r[i].begin, (unsigned long long)r[i].end,
                           f->tensors[r[prev].index].name);
        else if (r[i].begin > pos && prev < 0)
            rc = llmq_fail("%s: tensor '%s': data starts at %llu, leaving bytes 0..%llu unused", f->path, name,
                           (unsigned long long)r[i].begin, (unsigned long long)r[i].begin);
        else if (r[i].begin > pos)
            rc = llmq_fail("%s: tensor '%s': hole of %llu bytes between it and tensor '%s'", f->path, name,
                           (unsigned long long)(r[i].begin - pos), f->tensors[r[prev].index].name);
        pos = r[i].end;
        prev = i;
    }
    if (!rc && pos != p->data_len)
        rc = llmq_fail("%s: %llu bytes after the last tensor ('%s') are not covered by any tensor", f->path,
                       (unsigned long long)(p->data_len - pos), f->tensors[r[prev].index].name);
    free(r);
    return rc;
}

/* cJSON is more lenient than JSON and the Rust reader: it takes control
 * characters and invalid UTF-8 inside strings, and numbers like 1.0, 1e3,
 * -0 or 007 (which a double cannot tell from 1, 1000, 0, 7). Scan the raw
 * text so that every file we accept is one the reference accepts too. */
static int check_header_text(const st_parse *p)
{
    const uint8_t *h = (const uint8_t *)p->hdr;
    size_t n = p->hdr_len;
    int in_string = 0;
    for (size_t i = 0; i < n; i++) {
        uint8_t c = h[i];
        if (c < 0x20 && !(!in_string && is_json_space(c)))
            return llmq_fail("%s: header byte %zu is a control character (0x%02x)", p->f->path, i, c);
        if (in_string) {
            if (c == '"') {
                in_string = 0;
            } else if (c == '\\') {
                if (i + 5 < n && memcmp(h + i + 1, "u0000", 5) == 0)
                    return llmq_fail("%s: header byte %zu: \\u0000 in a string", p->f->path, i);
                i++; /* skip the escaped character */
            } else if (c >= 0x80) {
                size_t len = utf8_seq_len(h + i, n - i);
                if (!len)
                    return llmq_fail("%s: header byte %zu: invalid UTF-8", p->f->path, i);
                i += len - 1;
            }
        } else if (c == '"') {
            in_string = 1;
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            size_t j = i;
            int plain = 1;
            while (j < n && h[j] && strchr("0123456789+-.eE", h[j])) {
                if (h[j] < '0' || h[j] > '9')
                    plain = 0;
                j++;
            }
            if (!plain || (h[i] == '0' && j - i > 1))
                return llmq_fail("%s: header byte %zu: number '%.*s' is not a plain non-negative integer",
                                 p->f->path, i, (int)(j - i < 40 ? j - i : 40), (const char *)h + i);
            i = j - 1;
        } else if (c >= 0x80) {
            return llmq_fail("%s: header byte %zu: unexpected byte 0x%02x", p->f->path, i, c);
        }
    }
    return 0;
}

/* JSON text -> f->json; the text must be one object, optionally followed by
 * whitespace padding, and nothing after it. */
static int parse_json(const st_parse *p)
{
    st_file *f = p->f;
    if (p->hdr[0] != '{')
        return llmq_fail("%s: header does not start with '{'", f->path);
    /* A NUL-terminated copy: no parser can run past the header into the
     * tensor data (or past the end of the mapping). */
    char *text = malloc(p->hdr_len + 1);
    if (!text)
        return llmq_fail("%s: out of memory for a %zu-byte header", f->path, p->hdr_len);
    memcpy(text, p->hdr, p->hdr_len);
    text[p->hdr_len] = 0;
    const char *end = NULL;
    f->json = cJSON_ParseWithLengthOpts(text, p->hdr_len, &end, 0);
    size_t stop = end ? (size_t)(end - text) : 0;
    int rc = 0;
    if (!f->json) {
        rc = llmq_fail("%s: header is not valid JSON (at byte %zu of %zu)", f->path, stop, p->hdr_len);
    } else {
        while (stop < p->hdr_len && is_json_space((unsigned char)text[stop]))
            stop++;
        if (stop < p->hdr_len)
            rc = llmq_fail("%s: header has extra text after the JSON object (byte %zu of %zu)", f->path, stop,
                           p->hdr_len);
        else if (!cJSON_IsObject(f->json))
            rc = llmq_fail("%s: header is not a JSON object", f->path);
    }
    free(text);
    return rc;
}

/* Walk the top-level members: one optional __metadata__, the rest tensors. */
static int parse_entries(const st_parse *p)
{
    st_file *f = p->f;
    int n = cJSON_GetArraySize(f->json);
    f->tensors = calloc((size_t)n + 1, sizeof *f->tensors);
    uint64_t *begins = calloc((size_t)n + 1, sizeof *begins);
    if (!f->tensors || !begins) {
        free(begins);
        return llmq_fail("%s: out of memory", f->path);
    }
    int rc = 0, seen_meta = 0;
    const cJSON *c;
    cJSON_ArrayForEach(c, f->json)
    {
        if (strcmp(c->string, ST_METADATA_KEY) == 0) {
            rc = seen_meta++ ? llmq_fail("%s: %s appears twice", f->path, ST_METADATA_KEY) : parse_metadata(p, c);
        } else {
            st_tensor *t = &f->tensors[f->count];
            rc = parse_tensor(p, c, t, &begins[f->count]);
            int put = rc ? 0 : name_table_put(&f->names, t->name, f->count, NULL);
            if (put < 0)
                rc = llmq_fail("%s: out of memory", f->path);
            else if (put > 0)
                rc = llmq_fail("%s: tensor '%s': name appears twice in the header", f->path, t->name);
            f->count++;
        }
        if (rc)
            break;
    }
    if (!rc)
        rc = check_layout(p, begins);
    free(begins);
    return rc;
}

static int st_parse_image(st_file *f)
{
    if (f->map_len < 8)
        return llmq_fail("%s: file is %zu bytes, too short for a safetensors header", f->path, f->map_len);
    uint64_t n = load_le64(f->map);
    if (n == 0)
        return llmq_fail("%s: header length is 0", f->path);
    if (n > ST_MAX_HEADER)
        return llmq_fail("%s: header length %llu is over the %llu-byte limit", f->path, (unsigned long long)n,
                         ST_MAX_HEADER);
    if (n > f->map_len - 8)
        return llmq_fail("%s: header length %llu runs past the end of the file (%zu bytes)", f->path,
                         (unsigned long long)n, f->map_len);
    st_parse p = {f, (const char *)f->map + 8, (size_t)n, f->map + 8 + n, f->map_len - 8 - (size_t)n};
    if (parse_json(&p) || parse_entries(&p))
        return -1;
    return check_header_text(&p);
}

static st_file *st_file_new(const char *path)
{
    st_file *f = calloc(1, sizeof *f);
    if (f)
        f->path = strdup(path);
    if (!f || !f->path) {
        free(f);
        llmq_fail("%s: out of memory", path);
        return NULL;
    }
    return f;
}

/* Map the whole file read-only. Private mapping: nobody else's writes can
 * show up in our view (though truncation by another process still would;
 * that is outside what a reader can defend against). */
static int map_file(st_file *f)
{
    int fd = open(f->path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return llmq_fail("%s: %s", f->path, strerror(errno));
    struct stat sb;
    int rc = 0;
    if (fstat(fd, &sb) != 0)
        rc = llmq_fail("%s: %s", f->path, strerror(errno));
    else if (!S_ISREG(sb.st_mode))
        rc = llmq_fail("%s: not a regular file", f->path);
    else if (sb.st_size < 8)
        rc = llmq_fail("%s: file is %lld bytes, too short for a safetensors header", f->path,
                       (long long)sb.st_size);
    if (!rc) {
        void *m = mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
        if (m == MAP_FAILED) {
            rc = llmq_fail("%s: mmap: %s", f->path, strerror(errno));
        } else {
            f->map = m;
            f->map_len = (size_t)sb.st_size;
            f->mapped = 1;
        }
    }
    close(fd);
    return rc;
}

int st_open(st_file **out, const char *path)
{
    *out = NULL;
    st_file *f = st_file_new(path);
    if (!f)
        return -1;
    if (map_file(f) || st_parse_image(f)) {
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

int st_open_buffer(st_file **out, const void *data, size_t len, const char *name)
{
    *out = NULL;
    st_file *f = st_file_new(name);
    if (!f)
        return -1;
    f->map = data;
    f->map_len = len;
    if (st_parse_image(f)) {
        st_close(f);
        return -1;
    }
    *out = f;
    return 0;
}

void st_close(st_file *f)
{
    if (!f)
        return;
    if (f->mapped)
        munmap((void *)f->map, f->map_len);
    cJSON_Delete(f->json);
    name_table_free(&f->names);
    name_table_free(&f->meta);
    free(f->meta_values);
    free(f->tensors);
    free(f->path);
    free(f);
}

int st_count(const st_file *f) { return f->count; }

const st_tensor *st_at(const st_file *f, int i) { return i >= 0 && i < f->count ? &f->tensors[i] : NULL; }

const st_tensor *st_find(const st_file *f, const char *name)
{
    int i = name_table_get(&f->names, name);
    return i < 0 ? NULL : &f->tensors[i];
}

const char *st_metadata(const st_file *f, const char *key)
{
    int i = name_table_get(&f->meta, key);
    return i < 0 ? NULL : f->meta_values[i];
}

/* ------------------------------------------------------------------------ */
/* Model directories */

struct st_model {
    st_file **files;
    int nfiles;
    const st_tensor **tensors; /* point into files[*]->tensors */
    int count;
    name_table names;
};

void st_model_close(st_model *m)
{
    if (!m)
        return;
    for (int i = 0; i < m->nfiles; i++)
        st_close(m->files[i]);
    free(m->files);
    free(m->tensors);
    name_table_free(&m->names);
    free(m);
}

int st_model_count(const st_model *m) { return m->count; }

const st_tensor *st_model_at(const st_model *m, int i) { return i >= 0 && i < m->count ? m->tensors[i] : NULL; }

const st_tensor *st_model_find(const st_model *m, const char *name)
{
    int i = name_table_get(&m->names, name);
    return i < 0 ? NULL : m->tensors[i];
}

static int model_add_tensor(st_model *m, const st_tensor *t)
{
    m->tensors[m->count] = t;
    if (name_table_put(&m->names, t->name, m->count, NULL) != 0)
        return llmq_fail("out of memory");
    m->count++;
    return 0;
}

static int open_single(st_model *m, const char *path)
{
    m->files = calloc(1, sizeof *m->files);
    if (!m->files)
        return llmq_fail("%s: out of memory", path);
    if (st_open(&m->files[0], path))
        return -1;
    m->nfiles = 1;
    st_file *f = m->files[0];
    m->tensors = calloc((size_t)f->count + 1, sizeof *m->tensors);
    if (!m->tensors)
        return llmq_fail("%s: out of memory", path);
    for (int i = 0; i < f->count; i++)
        if (model_add_tensor(m, &f->tensors[i]))
            return -1;
    return 0;
}

/* Shard names come from a file we did not write: keep them inside dir. */
static int shard_name_ok(const char *s)
{
    return s[0] && strchr(s, '/') == NULL && strcmp(s, ".") != 0 && strcmp(s, "..") != 0;
}

/* Parsed weight_map: tensor -> shard number, shards in order of first use. */
typedef struct {
    cJSON *json;
    const cJSON *map;
    name_table tensor_shard; /* tensor name -> shard number */
    name_table shard_ids; /* shard file name -> shard number */
    const char **shards;
    int nshards;
} weight_map;

static void weight_map_free(weight_map *w)
{
    cJSON_Delete(w->json);
    name_table_free(&w->tensor_shard);
    name_table_free(&w->shard_ids);
    free(w->shards);
}

static int weight_map_load(weight_map *w, const char *index_path)
{
    memset(w, 0, sizeof *w);
    char *text;
    size_t len;
    if (llmq_read_file(index_path, &text, &len))
        return -1;
    w->json = cJSON_ParseWithLength(text, len);
    free(text);
    if (!w->json || !cJSON_IsObject(w->json))
        return llmq_fail("%s: not a JSON object", index_path);
    w->map = cJSON_GetObjectItemCaseSensitive(w->json, "weight_map");
    if (!cJSON_IsObject(w->map))
        return llmq_fail("%s: \"weight_map\" missing or not an object", index_path);
    int n = cJSON_GetArraySize(w->map);
    w->shards = calloc((size_t)n + 1, sizeof *w->shards);
    if (!w->shards)
        return llmq_fail("%s: out of memory", index_path);
    const cJSON *c;
    cJSON_ArrayForEach(c, w->map)
    {
        if (!cJSON_IsString(c) || !shard_name_ok(c->valuestring))
            return llmq_fail("%s: tensor '%s': shard is not a plain file name", index_path, c->string);
        int shard = w->nshards; /* a new shard's number, or the existing one's */
        int rc = name_table_put(&w->shard_ids, c->valuestring, w->nshards, &shard);
        if (rc < 0)
            return llmq_fail("%s: out of memory", index_path);
        if (rc == 0)
            w->shards[w->nshards++] = c->valuestring;
        rc = name_table_put(&w->tensor_shard, c->string, shard, NULL);
        if (rc < 0)
            return llmq_fail("%s: out of memory", index_path);
        if (rc > 0)
            return llmq_fail("%s: tensor '%s' appears twice in weight_map", index_path, c->string);
    }
    return 0;
}

/* Every weight_map entry must be in its shard; report the first missing. */
static int report_missing(const weight_map *w, const st_model *m, const char *index_path)
{
    const cJSON *c;
    cJSON_ArrayForEach(c, w->map)
    {
        int shard = name_table_get(&w->shard_ids, c->valuestring);
        if (!st_find(m->files[shard], c->string))
            return llmq_fail("%s: tensor '%s' is listed in shard '%s', which does not contain it", index_path,
                             c->string, c->valuestring);
    }
    return llmq_fail("%s: weight_map and shards disagree", index_path);
}

/* Tensors are taken shard by shard in header order (the order they were
 * written, usually layer order), keeping those the index assigns to that
 * shard. */
static int open_sharded(st_model *m, const char *dir, const char *index_path)
{
    weight_map w;
    int rc = weight_map_load(&w, index_path);
    if (!rc) {
        m->files = calloc((size_t)w.nshards + 1, sizeof *m->files);
        m->tensors = calloc(w.tensor_shard.count + 1, sizeof *m->tensors);
        if (!m->files || !m->tensors)
            rc = llmq_fail("%s: out of memory", index_path);
    }
    for (int s = 0; !rc && s < w.nshards; s++) {
        char *path = llmq_path_join(dir, w.shards[s]);
        rc = path ? st_open(&m->files[s], path) : llmq_fail("out of memory");
        free(path);
        if (rc)
            break;
        m->nfiles++;
        const st_file *f = m->files[s];
        for (int i = 0; !rc && i < f->count; i++)
            if (name_table_get(&w.tensor_shard, f->tensors[i].name) == s)
                rc = model_add_tensor(m, &f->tensors[i]);
    }
    if (!rc && (size_t)m->count != w.tensor_shard.count)
        rc = report_missing(&w, m, index_path);
    weight_map_free(&w);
    return rc;
}

int st_model_open(st_model **out, const char *dir)
{
    *out = NULL;
    st_model *m = calloc(1, sizeof *m);
    char *index_path = llmq_path_join(dir, ST_INDEX_NAME);
    char *single_path = llmq_path_join(dir, ST_SINGLE_NAME);
    int rc;
    if (!m || !index_path || !single_path)
        rc = llmq_fail("%s: out of memory", dir);
    else if (llmq_file_exists(index_path))
        rc = open_sharded(m, dir, index_path);
    else if (llmq_file_exists(single_path))
        rc = open_single(m, single_path);
    else
        rc = llmq_fail("%s: no %s or %s in this directory", dir, ST_SINGLE_NAME, ST_INDEX_NAME);
    free(index_path);
    free(single_path);
    if (rc) {
        st_model_close(m);
        return -1;
    }
    *out = m;
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Conversion */

int st_read_f32(const st_tensor *t, float *dst)
{
    if (!llmq_dtype_is_float(t->dtype))
        return llmq_fail("%s: tensor '%s': dtype %s is not a float type", t->file ? t->file : "?", t->name,
                         llmq_dtype_name(t->dtype));
    size_t esize = llmq_dtype_size(t->dtype), n = (size_t)t->numel;
    if (t->dtype == LLMQ_F32 || (uintptr_t)t->data % esize == 0)
        return llmq_convert(dst, LLMQ_F32, t->data, t->dtype, n);
    /* The data area need not be aligned (a header length that is not a
     * multiple of 8 shifts every tensor), and the converters load whole
     * elements, so go through an aligned bounce buffer. */
    double bounce[1024];
    size_t chunk = sizeof bounce / esize;
    const uint8_t *src = t->data;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        memcpy(bounce, src + i * esize, k * esize);
        if (llmq_convert(dst + i, LLMQ_F32, bounce, t->dtype, k))
            return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------ */
/* Writer */

typedef struct {
    char *name;
    llmq_dtype dtype;
    int ndim;
    int64_t shape[ST_MAX_DIMS];
    size_t nbytes;
    const void *data;
} st_wtensor;

struct st_writer {
    st_wtensor *tensors;
    int count, cap;
    name_table names;
    char **meta_keys, **meta_values;
    int meta_count, meta_cap;
    size_t total_bytes;
};

st_writer *st_writer_new(void) { return calloc(1, sizeof(st_writer)); }

void st_writer_free(st_writer *w)
{
    if (!w)
        return;
    for (int i = 0; i < w->count; i++)
        free(w->tensors[i].name);
    for (int i = 0; i < w->meta_count; i++) {
        free(w->meta_keys[i]);
        free(w->meta_values[i]);
    }
    free(w->tensors);
    free(w->meta_keys);
    free(w->meta_values);
    name_table_free(&w->names);
    free(w);
}

size_t st_writer_bytes(const st_writer *w) { return w->total_bytes; }

/* Tensor names end up as JSON keys and in messages and file listings:
 * valid UTF-8, no control characters, not the metadata key. */
static int check_tensor_name(const char *name)
{
    if (!name || !name[0])
        return llmq_fail("tensor name is empty");
    for (const uint8_t *s = (const uint8_t *)name; *s; s++)
        if (*s < 0x20 || *s == 0x7f)
            return llmq_fail("tensor name '%s' contains a control character", name);
    if (!utf8_valid(name))
        return llmq_fail("tensor name '%s' is not valid UTF-8", name);
    if (strcmp(name, ST_METADATA_KEY) == 0)
        return llmq_fail("tensor name '%s' is reserved", name);
    return 0;
}

static int check_tensor_shape(const char *name, llmq_dtype dt, int ndim, const int64_t *shape, size_t *nbytes)
{
    if ((unsigned)dt >= LLMQ_DTYPE_COUNT)
        return llmq_fail("tensor '%s': invalid dtype %d", name, (int)dt);
    if (ndim < 0 || ndim > ST_MAX_DIMS)
        return llmq_fail("tensor '%s': %d dimensions (0..%d supported)", name, ndim, ST_MAX_DIMS);
    if (ndim > 0 && !shape)
        return llmq_fail("tensor '%s': shape is NULL", name);
    uint64_t bytes = llmq_dtype_size(dt);
    for (int i = 0; i < ndim; i++) {
        if (shape[i] < 0 || (double)shape[i] > ST_MAX_EXACT)
            return llmq_fail("tensor '%s': shape[%d] = %lld is out of range", name, i, (long long)shape[i]);
        if (__builtin_mul_overflow(bytes, (uint64_t)shape[i], &bytes) || bytes > (uint64_t)SIZE_MAX)
            return llmq_fail("tensor '%s': size overflows", name);
    }
    *nbytes = (size_t)bytes;
    return 0;
}

static int grow_array(void **arr, int *cap, int need, size_t elem)
{
    if (need <= *cap)
        return 0;
    int ncap = *cap ? *cap * 2 : 64;
    while (ncap < need)
        ncap *= 2;
    void *p = realloc(*arr, (size_t)ncap * elem);
    if (!p)
        return -1;
    *arr = p;
    *cap = ncap;
    return 0;
}

int st_writer_add(st_writer *w, const char *name, llmq_dtype dt, int ndim, const int64_t *shape,
                  const void *data)
{
    size_t nbytes = 0;
    if (check_tensor_name(name) || check_tensor_shape(name, dt, ndim, shape, &nbytes))
        return -1;
    if (nbytes && !data)
        return llmq_fail("tensor '%s': data is NULL", name);
    if (name_table_get(&w->names, name) >= 0)
        return llmq_fail("tensor '%s': added twice", name);
    if (w->total_bytes + nbytes < w->total_bytes)
        return llmq_fail("tensor '%s': total size overflows", name);
    if (grow_array((void **)&w->tensors, &w->cap, w->count + 1, sizeof *w->tensors))
        return llmq_fail("tensor '%s': out of memory", name);
    st_wtensor *t = &w->tensors[w->count];
    *t = (st_wtensor){strdup(name), dt, ndim, {0}, nbytes, data};
    if (ndim > 0)
        memcpy(t->shape, shape, (size_t)ndim * sizeof *shape);
    if (!t->name || name_table_put(&w->names, t->name, w->count, NULL) != 0) {
        free(t->name);
        return llmq_fail("tensor '%s': out of memory", name);
    }
    w->count++;
    w->total_bytes += nbytes;
    return 0;
}

/* Setting a key again replaces its value and keeps its position. */
int st_writer_meta(st_writer *w, const char *key, const char *value)
{
    if (!key || !value || !utf8_valid(key) || !utf8_valid(value))
        return llmq_fail("metadata '%s': key and value must be valid UTF-8 strings", key ? key : "(null)");
    char *v = strdup(value);
    if (!v)
        return llmq_fail("metadata '%s': out of memory", key);
    for (int i = 0; i < w->meta_count; i++) {
        if (strcmp(w->meta_keys[i], key) == 0) {
            free(w->meta_values[i]);
            w->meta_values[i] = v;
            return 0;
        }
    }
    int cap = w->meta_cap;
    char *k = strdup(key);
    if (!k || grow_array((void **)&w->meta_keys, &cap, w->meta_count + 1, sizeof(char *)) ||
        grow_array((void **)&w->meta_values, &w->meta_cap, w->meta_count + 1, sizeof(char *))) {
        free(k);
        free(v);
        return llmq_fail("metadata '%s': out of memory", key);
    }
    w->meta_keys[w->meta_count] = k;
    w->meta_values[w->meta_count++] = v;
    return 0;
}

/* Growable text buffer; `failed` sticks after the first allocation error so
 * callers check once at the end. */
typedef struct {
    char *p;
    size_t len, cap;
    int failed;
} strbuf;

static void sb_append(strbuf *b, const char *s, size_t n)
{
    if (b->failed)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->failed = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = 0;
}

static void sb_puts(strbuf *b, const char *s) { sb_append(b, s, strlen(s)); }

static void sb_printf(strbuf *b, const char *fmt, ...) LLMQ_PRINTF(2, 3);
static void sb_printf(strbuf *b, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof tmp)
        b->failed = 1; /* only used for short numeric fields */
    else
        sb_append(b, tmp, (size_t)n);
}

/* A JSON string literal; the input is valid UTF-8, so only quotes,
 * backslashes and control characters need escaping. */
static void sb_json_string(strbuf *b, const char *s)
{
    sb_puts(b, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            sb_append(b, esc, 2);
        } else if (c < 0x20) {
            sb_printf(b, "\\u%04x", c);
        } else {
            sb_append(b, (const char *)&c, 1);
        }
    }
    sb_puts(b, "\"");
}

/* Header JSON for tensors [first, last) with offsets relative to the first,
 * padded with spaces so the data area starts 8-byte aligned in the file
 * (8 + header length is a multiple of 8), as the Rust writer does. */
static int build_header(const st_writer *w, int first, int last, strbuf *b)
{
    sb_puts(b, "{");
    if (w->meta_count) {
        sb_json_string(b, ST_METADATA_KEY);
        sb_puts(b, ":{");
        for (int i = 0; i < w->meta_count; i++) {
            sb_puts(b, i ? "," : "");
            sb_json_string(b, w->meta_keys[i]);
            sb_puts(b, ":");
            sb_json_string(b, w->meta_values[i]);
        }
        sb_puts(b, "}");
    }
    uint64_t offset = 0;
    for (int i = first; i < last; i++) {
        const st_wtensor *t = &w->tensors[i];
        sb_puts(b, i > first || w->meta_count ? "," : "");
        sb_json_string(b, t->name);
        sb_printf(b, ":{\"dtype\":\"%s\",\"shape\":[", llmq_dtype_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            sb_printf(b, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        sb_printf(b, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                  (unsigned long long)(offset + t->nbytes));
        offset += t->nbytes;
    }
    sb_puts(b, "}");
    while (!b->failed && b->len % 8 != 0)
        sb_puts(b, " ");
    if (b->failed)
        return llmq_fail("out of memory building a safetensors header");
    if (b->len > ST_MAX_HEADER)
        return llmq_fail("safetensors header would be %zu bytes (limit %llu)", b->len, ST_MAX_HEADER);
    return 0;
}

static int write_range(const st_writer *w, int first, int last, const char *path)
{
    strbuf hdr = {0};
    if (build_header(w, first, last, &hdr)) {
        free(hdr.p);
        return llmq_wrap("%s", path);
    }
    llmq_atomic a;
    if (llmq_atomic_open(&a, path)) {
        free(hdr.p);
        return -1;
    }
    uint8_t len8[8];
    store_le64(len8, hdr.len);
    int ok = fwrite(len8, 1, 8, a.fp) == 8 && fwrite(hdr.p, 1, hdr.len, a.fp) == hdr.len;
    free(hdr.p);
    int i = first;
    for (; ok && i < last; i++) {
        const st_wtensor *t = &w->tensors[i];
        ok = t->nbytes == 0 || fwrite(t->data, 1, t->nbytes, a.fp) == t->nbytes;
    }
    if (!ok) {
        int e = errno;
        llmq_atomic_abort(&a);
        if (i > first)
            return llmq_fail("%s: writing tensor '%s': %s", path, w->tensors[i - 1].name, strerror(e));
        return llmq_fail("%s: writing header: %s", path, strerror(e));
    }
    return llmq_atomic_commit(&a);
}

int st_writer_commit(st_writer *w, const char *path) { return write_range(w, 0, w->count, path); }

/* ---- sharded output ---- */

/* Shard files listed by an existing index in dir (a malloc'd NULL-ended
 * list), so a rewrite can remove the ones it does not reuse; NULL when there
 * is no readable index. */
static char **stale_shards(const char *dir)
{
    char *index_path = llmq_path_join(dir, ST_INDEX_NAME);
    char **list = NULL;
    if (index_path && llmq_file_exists(index_path)) {
        weight_map wm;
        if (weight_map_load(&wm, index_path) == 0) {
            list = calloc((size_t)wm.nshards + 1, sizeof *list);
            for (int i = 0; list && i < wm.nshards; i++)
                list[i] = strdup(wm.shards[i]); /* a NULL ends the list early: fine */
        }
        weight_map_free(&wm);
        llmq_clear_error(); /* a broken old index is not our failure */
    }
    free(index_path);
    return list;
}

/* Remove files of the old layout. Only *.safetensors names are touched, so a
 * corrupt index cannot make us delete config.json or the tokenizer. */
static void remove_stale(const char *dir, char **old, char *const *keep, int nkeep)
{
    for (int i = 0; old && old[i]; i++) {
        size_t n = strlen(old[i]);
        int is_st = n > 12 && strcmp(old[i] + n - 12, ".safetensors") == 0;
        for (int k = 0; is_st && k < nkeep; k++)
            if (strcmp(old[i], keep[k]) == 0)
                is_st = 0;
        char *p = is_st ? llmq_path_join(dir, old[i]) : NULL;
        if (p)
            unlink(p);
        free(p);
    }
}

static void free_list(char **list, int n)
{
    for (int i = 0; list && (n < 0 ? list[i] != NULL : i < n); i++)
        free(list[i]);
    free(list);
}

static void unlink_in(const char *dir, const char *name)
{
    char *p = llmq_path_join(dir, name);
    if (p)
        unlink(p);
    free(p);
}

static int write_single(st_writer *w, const char *dir)
{
    char *path = llmq_path_join(dir, ST_SINGLE_NAME);
    if (!path)
        return llmq_fail("%s: out of memory", dir);
    char **old = stale_shards(dir);
    int rc = st_writer_commit(w, path);
    free(path);
    if (!rc) {
        /* Readers prefer the index, so it goes first; then its shards. */
        unlink_in(dir, ST_INDEX_NAME);
        char *keep = ST_SINGLE_NAME;
        remove_stale(dir, old, &keep, 1);
    }
    free_list(old, -1);
    return rc;
}

/* Greedy split in add order: a shard closes when the next tensor would take
 * it over max (a tensor bigger than max gets a shard of its own). Fills
 * starts[0..n] (starts[n] == count) and returns n. */
static int plan_shards(const st_writer *w, size_t max, int *starts)
{
    int n = 0;
    size_t used = 0;
    starts[0] = 0;
    for (int i = 0; i < w->count; i++) {
        size_t b = w->tensors[i].nbytes;
        if (i > starts[n] && used + b > max) {
            starts[++n] = i;
            used = 0;
        }
        used += b;
    }
    starts[++n] = w->count;
    return n;
}

static int build_index(const st_writer *w, const int *starts, int nshards, char *const *names, strbuf *b)
{
    sb_printf(b, "{\n  \"metadata\": {\n    \"total_size\": %llu\n  },\n  \"weight_map\": {",
              (unsigned long long)w->total_bytes);
    for (int s = 0; s < nshards; s++) {
        for (int i = starts[s]; i < starts[s + 1]; i++) {
            sb_puts(b, i ? ",\n    " : "\n    ");
            sb_json_string(b, w->tensors[i].name);
            sb_puts(b, ": ");
            sb_json_string(b, names[s]);
        }
    }
    sb_puts(b, "\n  }\n}\n");
    return b->failed ? llmq_fail("out of memory building the shard index") : 0;
}

static int write_shards(st_writer *w, const char *dir, size_t max)
{
    int *starts = malloc(((size_t)w->count + 2) * sizeof *starts);
    if (!starts)
        return llmq_fail("%s: out of memory", dir);
    int n = plan_shards(w, max, starts), rc = 0;
    char **names = calloc((size_t)n, sizeof *names);
    char **old = stale_shards(dir);
    for (int s = 0; names && s < n && !rc; s++) {
        char buf[64];
        snprintf(buf, sizeof buf, "model-%05d-of-%05d.safetensors", s + 1, n);
        char *path = llmq_path_join(dir, buf);
        names[s] = strdup(buf);
        rc = path && names[s] ? write_range(w, starts[s], starts[s + 1], path) : llmq_fail("out of memory");
        free(path);
    }
    strbuf idx = {0};
    char *index_path = llmq_path_join(dir, ST_INDEX_NAME);
    if (!names || !index_path)
        rc = llmq_fail("%s: out of memory", dir);
    if (!rc)
        rc = build_index(w, starts, n, names, &idx);
    if (!rc)
        rc = llmq_write_file(index_path, idx.p, idx.len);
    if (!rc) {
        /* The new index is what readers now see; the old files can go. */
        unlink_in(dir, ST_SINGLE_NAME);
        remove_stale(dir, old, names, n);
    }
    free(idx.p);
    free(index_path);
    free_list(names, n);
    free_list(old, -1);
    free(starts);
    return rc;
}

int st_write_sharded(st_writer *w, const char *dir, size_t max_shard_bytes)
{
    if (max_shard_bytes == 0 || w->total_bytes <= max_shard_bytes)
        return write_single(w, dir);
    return write_shards(w, dir, max_shard_bytes);
}

const char *st_model_metadata(const st_model *m, const char *key)
{
    for (int i = 0; i < m->nfiles; i++) {
        const char *v = st_metadata(m->files[i], key);
        if (v)
            return v;
    }
    return NULL;
}
