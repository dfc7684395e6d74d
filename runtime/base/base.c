/*
 * The basics that are functions (base/base.h): the panic, the clock, and the
 * word that stands in for fences under ThreadSanitizer.
 */
#include "base.h"
#include "sys.h"

#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <unistd.h>

#if defined(WEFT__TSAN)
_Atomic unsigned weft__tsan_fence_word;
#endif

void (*_Atomic weft__panic_context)(int fd);

_Noreturn WEFT__COLD void weft__panic(const char *file, int line, const char *msg)
{
    char buf[512];
    int n = snprintf(buf, sizeof(buf), "weft: %s (%s:%d)\n", msg, file, line);
    if (n > 0) {
        ssize_t rc = weft__sys_write(STDERR_FILENO, buf, (size_t)n < sizeof(buf) ? (size_t)n : sizeof(buf) - 1);
        (void)rc;
    }
    void (*context)(int) = atomic_load_explicit(&weft__panic_context, memory_order_relaxed);   /* set once, before any task */
    if (context)
        context(STDERR_FILENO);   /* which coroutine broke it, and where */
    abort();
}

uint64_t weft_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}
