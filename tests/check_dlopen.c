/* SPDX-License-Identifier: MIT */
/*
 * Usage: check_dlopen LIBWEFT.so
 * A program that was linked without weft loads the shared library with
 * dlopen and runs coroutines in it. weft's thread-locals use the
 * initial-exec model (runtime/base/base.h), which a library loaded this way
 * may use only while glibc's reserve of static TLS holds them; this proves
 * that it does.
 */
#include <weft.h>   /* for the types only: nothing here links against weft */

#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>

static int (*spawn)(weft_task **, weft_fn, void *);
static int (*join)(weft_task *, void **);

static void *square(void *arg)
{
    uintptr_t x = (uintptr_t)arg;
    return (void *)(x * x);
}

static void *run(void *arg)
{
    (void)arg;
    enum { N = 100 };
    weft_task *t[N];
    uintptr_t sum = 0;
    for (uintptr_t i = 0; i < N; i++)
        if (spawn(&t[i], square, (void *)i) != 0)
            return NULL;
    for (int i = 0; i < N; i++) {
        void *r;
        if (join(t[i], &r) != 0)
            return NULL;
        sum += (uintptr_t)r;
    }
    return (void *)sum;
}

int main(int argc, char **argv)
{
    if (argc != 2) {
        fprintf(stderr, "usage: check_dlopen LIBWEFT.so\n");
        return 2;
    }
    void *lib = dlopen(argv[1], RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
        printf("FAIL: dlopen: %s\n", dlerror());
        return 1;
    }
    int (*main_fn)(const weft_config *, weft_fn, void *, void **);
    *(void **)&main_fn = dlsym(lib, "weft_main");
    *(void **)&spawn = dlsym(lib, "weft_spawn");
    *(void **)&join = dlsym(lib, "weft_join");
    if (!main_fn || !spawn || !join) {
        printf("FAIL: dlsym: %s\n", dlerror());
        return 1;
    }
    void *sum = NULL;
    int err = main_fn(NULL, run, NULL, &sum);
    uintptr_t want = 99 * 100 * 199 / 6;   /* the squares of 0..99 */
    if (err != 0 || (uintptr_t)sum != want) {
        printf("FAIL: weft_main returned %d with sum %lu, expected 0 and %lu\n",
               err, (unsigned long)(uintptr_t)sum, (unsigned long)want);
        return 1;
    }
    dlclose(lib);
    printf("dlopen: 1 passed, 0 failed\n");
    return 0;
}
