/* Many coroutines: each greets, yields once, and returns its number; main adds
 * them up. Run: ./hello [count] */
#include <weft.h>

#include <stdio.h>
#include <stdlib.h>

static void *greet(void *arg)
{
    uintptr_t i = (uintptr_t)arg;
    if (i < 3)
        printf("hello from coroutine %lu on worker %d\n", (unsigned long)i, weft_worker());
    weft_yield();
    return (void *)i;
}

static void *run(void *arg)
{
    size_t n = *(size_t *)arg;
    weft_task **tasks = malloc(n * sizeof(*tasks));
    if (!tasks)
        return (void *)-1;
    for (size_t i = 0; i < n; i++) {
        int err = weft_spawn(&tasks[i], greet, (void *)(uintptr_t)i);
        if (err) {
            fprintf(stderr, "spawn: %d\n", err);
            exit(1);
        }
    }
    uint64_t sum = 0;
    for (size_t i = 0; i < n; i++) {
        void *r;
        weft_join(tasks[i], &r);
        sum += (uintptr_t)r;
    }
    free(tasks);
    printf("%zu coroutines on %d workers, sum of their numbers %llu (expected %llu)\n",
           n, weft_workers(), (unsigned long long)sum, (unsigned long long)n * (n - 1) / 2);
    return NULL;
}

int main(int argc, char **argv)
{
    size_t n = argc > 1 ? strtoul(argv[1], NULL, 10) : 100000;
    int err = weft_main(NULL, run, &n, NULL);
    if (err) {
        fprintf(stderr, "weft_main: %d\n", err);
        return 1;
    }
    return 0;
}
