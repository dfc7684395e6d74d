/* The program tests/check_gdb_helper.sh looks at with gdb: a runtime whose
 * coroutines wait in known places, named, each a frame below its entry. It
 * prints "ready" once they all wait, then waits until it is killed. */
#define _GNU_SOURCE
#include <weft.h>

#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

static weft_chan *ch;

/* noinline and the volatile result keep a frame of their own at -O2. */
static __attribute__((noinline)) int gdb_wait_on_channel(void)
{
    int v;
    volatile int r = weft_chan_recv(ch, &v);
    return r;
}

static void *gdb_receiver(void *arg)
{
    weft_set_name("gdb-receiver");
    volatile int r = gdb_wait_on_channel();
    return (void *)(intptr_t)r;
}

static __attribute__((noinline)) int gdb_nap(void)
{
    volatile int r = weft_sleep(3600ull * 1000000000u);
    return r;
}

static void *gdb_sleeper(void *arg)
{
    weft_set_name("gdb-sleeper");
    volatile int r = gdb_nap();
    return (void *)(intptr_t)r;
}

int main(void)
{
#ifdef PR_SET_PTRACER
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);   /* gdb -p, where Yama restricts it */
#endif
    weft_config cfg = { .workers = 2 };
    weft_rt *rt;
    weft_task *a, *b;
    if (weft_rt_create(&rt, &cfg) || weft_chan_create(&ch, sizeof(int), 0) ||
        weft_spawn_on(rt, &a, gdb_receiver, NULL) || weft_spawn_on(rt, &b, gdb_sleeper, NULL)) {
        fprintf(stderr, "gdb_target: setup failed\n");
        return 1;
    }
    weft_stats s;
    do {
        usleep(1000);
        weft_stats_get(rt, &s);
    } while (s.waiting < 2);
    usleep(100000);   /* the wait reasons are noted before the parks are counted */
    printf("ready %d\n", (int)getpid());
    fflush(stdout);
    for (;;)
        pause();
}
