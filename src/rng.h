/* A small deterministic PRNG (splitmix64 seeding xoshiro256**): the same
 * seed gives the same stream on every platform, so sampling is
 * reproducible byte for byte. */
#ifndef LLMQ_RNG_H
#define LLMQ_RNG_H

#include <stdint.h>

typedef struct {
    uint64_t s[4];
} llmq_rng;

static inline uint64_t llmq_splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline void llmq_rng_seed(llmq_rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = llmq_splitmix64(&seed);
}

static inline uint64_t llmq_rng_next(llmq_rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = ((s[1] * 5) << 7 | (s[1] * 5) >> 57) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0], s[3] ^= s[1], s[1] ^= s[2], s[0] ^= s[3];
    s[2] ^= t;
    s[3] = s[3] << 45 | s[3] >> 19;
    return result;
}

/* Uniform integer in [0, n), n > 0, without modulo bias. */
static inline uint64_t llmq_rng_below(llmq_rng *r, uint64_t n)
{
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t x;
    do
        x = llmq_rng_next(r);
    while (x >= limit);
    return x % n;
}

#endif
