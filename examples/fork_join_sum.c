/* A recursive fork-join sum over an array, on 1 worker and then on every CPU,
 * to show the multicore speed-up. Run: ./fork_join_sum [elements] */
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>

#define LEAF 4096

struct range {
    const uint32_t *v;
    size_t          n;
};

/* Deliberately compute-bound: a few rounds of mixing per element. */
static uint64_t leaf_sum(const uint32_t *v, size_t n)
{
    uint64_t s = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t x = v[i];
        for (int r = 0; r < 8; r++)
            x = x * 6364136223846793005ull + 1442695040888963407ull;
        s += x >> 40;
    }
    return s;
}

static void *sum(void *arg)
{
    struct range *r = arg;
    if (r->n <= LEAF)
        return (void *)(uintptr_t)leaf_sum(r->v, r->n);
    struct range left = { r->v, r->n / 2 }, right = { r->v + r->n / 2, r->n - r->n / 2 };
    weft_task *t;
    if (weft_spawn(&t, sum, &left) != 0)
        abort();
    uintptr_t b = (uintptr_t)sum(&right);
    void *a;
    weft_join(t, &a);
    return (void *)((uintptr_t)a + b);
}

static double timed(unsigned workers, struct range *r, uint64_t *out)
{
    weft_config cfg = { .workers = workers };
    void *res;
    uint64_t t0 = weft_now();
    if (weft_main(&cfg, sum, r, &res) != 0)
        abort();
    *out = (uintptr_t)res;
    return (double)(weft_now() - t0) / 1e6;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : (size_t)1 << 24;
    uint32_t *v = malloc(n * sizeof(*v));
    if (!v)
        return 1;
    for (size_t i = 0; i < n; i++)
        v[i] = (uint32_t)(i * 2654435761u);
    struct range r = { v, n };
    uint64_t s1, sn, expect = leaf_sum(v, n);
    double t1 = timed(1, &r, &s1);
    double tn = timed(0, &r, &sn);
    printf("1 worker:   %8.1f ms  sum %llu\n", t1, (unsigned long long)s1);
    printf("all CPUs:   %8.1f ms  sum %llu  speed-up %.2fx\n", tn, (unsigned long long)sn, t1 / tn);
    free(v);
    return s1 == expect && sn == expect ? 0 : 1;
}
