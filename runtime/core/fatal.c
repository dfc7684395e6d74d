/* SPDX-License-Identifier: MIT */
/*
 * Fatal messages that name the coroutine: what weft__panic (a broken
 * invariant) and the stack overflow handler (core/stack.c) print of the
 * running coroutine, its part of the dump. A handler's message allocates
 * nothing and takes no lock, as the fault may have struck inside malloc: the
 * names come from the object's symbol table read with open and mmap, and the
 * unwinder's address space is made beforehand (weft__dump_prepare).
 */
#include "dump.h"
#include "base/sys.h"

#include <dlfcn.h>
#include <elf.h>
#include <fcntl.h>
#include <link.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>

/* A line into fd at once, from a buffer on the stack: no allocation. */
__attribute__((format(printf, 2, 3)))
static void say(int fd, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (n <= 0)
        return;
    ssize_t rc = weft__sys_write(fd, line, (size_t)n < sizeof(line) ? (size_t)n : sizeof(line) - 1);
    (void)rc;
}

/*
 * The function around pc from the symbol table (.symtab) of the object file
 * at path, loaded at base, with nothing but open, mmap, munmap and close:
 * all async-signal-safe. False if the file has none or no function holds pc.
 */
static bool elf_symbol(const char *path, uintptr_t base, uintptr_t pc, char *name, size_t len,
                       uintptr_t *off)
{
    int fd = weft__sys_open(path, O_RDONLY | O_CLOEXEC, 0);
    if (fd < 0)
        return false;
    struct stat sb;
    void *map = fstat(fd, &sb) == 0 && sb.st_size > (off_t)sizeof(ElfW(Ehdr))
                    ? mmap(NULL, (size_t)sb.st_size, PROT_READ, MAP_PRIVATE, fd, 0) : MAP_FAILED;
    weft__sys_close(fd);
    if (map == MAP_FAILED)
        return false;
    size_t size = (size_t)sb.st_size;
    const unsigned char *f = map;
    const ElfW(Ehdr) *eh = map;
    bool found = false;
    if (memcmp(eh->e_ident, ELFMAG, SELFMAG) == 0 && eh->e_shentsize == sizeof(ElfW(Shdr)) &&
        eh->e_shoff < size && eh->e_shnum <= (size - eh->e_shoff) / sizeof(ElfW(Shdr))) {
        const ElfW(Shdr) *sh = (const ElfW(Shdr) *)(f + eh->e_shoff);
        uintptr_t at = eh->e_type == ET_DYN ? pc - base : pc;   /* a PIE or a library: relative */
        for (unsigned i = 0; i < eh->e_shnum && !found; i++) {
            if (sh[i].sh_type != SHT_SYMTAB || sh[i].sh_link >= eh->e_shnum ||
                sh[i].sh_offset > size || sh[i].sh_size > size - sh[i].sh_offset)
                continue;
            const ElfW(Shdr) *strs = &sh[sh[i].sh_link];
            if (strs->sh_offset > size || strs->sh_size > size - strs->sh_offset)
                continue;
            const ElfW(Sym) *sym = (const ElfW(Sym) *)(f + sh[i].sh_offset);
            size_t n = sh[i].sh_size / sizeof(*sym);
            for (size_t k = 0; k < n; k++) {
                if (ELF64_ST_TYPE(sym[k].st_info) != STT_FUNC || sym[k].st_name >= strs->sh_size ||
                    at < sym[k].st_value || at - sym[k].st_value >= sym[k].st_size)
                    continue;
                const char *s = (const char *)(f + strs->sh_offset + sym[k].st_name);
                size_t slen = strnlen(s, strs->sh_size - sym[k].st_name);
                if (slen >= len)
                    slen = len - 1;
                memcpy(name, s, slen);
                name[slen] = '\0';
                *off = at - sym[k].st_value;
                found = true;
                break;
            }
        }
    }
    munmap(map, size);
    return found;
}

static int first_object(struct dl_phdr_info *info, size_t size, void *bias)
{
    (void)size;
    *(uintptr_t *)bias = info->dlpi_addr;   /* the executable comes first */
    return 1;
}

bool weft__elf_name(uintptr_t at, bool may_lock, char *name, size_t len, uintptr_t *off,
                    const char **obj)
{
    Dl_info info;
    if (dladdr((void *)at, &info) && info.dli_fname) {
        *obj = weft__base_name(info.dli_fname);
        return elf_symbol(info.dli_fname, (uintptr_t)info.dli_fbase, at, name, len, off) ||
               elf_symbol("/proc/self/exe", (uintptr_t)info.dli_fbase, at, name, len, off);
    }
    if (!may_lock)
        return false;
    /* A static program: dladdr knows no object, but the loader's list
     * still holds the executable. */
    uintptr_t bias = 0;
    dl_iterate_phdr(first_object, &bias);
    *obj = "the program";
    return elf_symbol("/proc/self/exe", bias, at, name, len, off);
}

/*
 * The name of pc without a cache, for fatal messages. In a signal handler
 * (in_signal) libunwind's symbol lookup is not used, as it allocates and the
 * fault may have struck inside malloc, whose lock a second malloc would wait
 * on for ever: there elf_symbol reads the object's symbol table instead.
 */
static void name_now(uintptr_t pc, bool ret, bool in_signal, char *buf, size_t len)
{
    struct weft__symtab st = { 0 };
#if WEFT_HAVE_LIBUNWIND
    if (!in_signal)
        st.as = unw_local_addr_space;
#endif
    if (in_signal && pc) {
        uintptr_t at = ret ? pc - 1 : pc, off;
        char fn[256];
        const char *obj;
        if (weft__elf_name(at, false, fn, sizeof(fn), &off, &obj)) {
            weft__name_at(buf, len, fn, off + (at != pc), obj);
            return;
        }
    }
    weft__describe(&st, pc, ret, buf, len);
}

#if WEFT_HAVE_LIBUNWIND
/* The address space of fatal messages: made before any can be needed, as a
 * signal handler may not allocate one. */
static _Atomic(unw_addr_space_t) fatal_as;
static pthread_once_t fatal_once = PTHREAD_ONCE_INIT;

static void fatal_as_make(void)
{
    atomic_store_explicit(&fatal_as, weft__unwind_space(), memory_order_release);   /* pairs with weft__dump_current */
}
#endif

void weft__dump_prepare(void)
{
#if WEFT_HAVE_LIBUNWIND
    pthread_once(&fatal_once, fatal_as_make);
#endif
}

void weft__dump_current(int fd, void *uc)
{
    struct weft__worker *w = weft__worker_self();
    weft_task *t = w ? w->current : NULL;
    if (!t)
        return;
    char entry[320], site[320];
    name_now((uintptr_t)t->fn, false, uc != NULL, entry, sizeof(entry));
    name_now((uintptr_t)t->spawn_pc, true, uc != NULL, site, sizeof(site));
    const char *name = t->fiber ? t->fiber->name : "";
    say(fd, "weft: in coroutine %llu%s%s%s [running on worker %u]:\n", (unsigned long long)t->id,
        name[0] ? " \"" : "", name, name[0] ? "\"" : "", w->index);
#if WEFT_HAVE_LIBUNWIND
    unw_addr_space_t as = atomic_load_explicit(&fatal_as, memory_order_acquire);   /* pairs with weft__dump_prepare */
    unw_context_t here;
    struct weft__image img;
    if (!uc)
        unw_getcontext(&here);
    weft__image_from_ucontext(&img, uc ? (const ucontext_t *)uc : (const ucontext_t *)&here);
    uintptr_t pcs[WEFT__DUMP_FRAMES];
    unsigned n = as ? weft__unwind(as, &img, pcs, WEFT__DUMP_FRAMES, 0) : 0;
    for (unsigned i = 0; i < n; i++) {
        char fn[320];
        name_now(pcs[i], i > 0, uc != NULL, fn, sizeof(fn));
        say(fd, "  #%-2u 0x%016lx %s\n", i, (unsigned long)pcs[i], fn);
    }
    if (n == WEFT__DUMP_FRAMES)
        say(fd, "  ...\n");
    if (!as)
        say(fd, "  (backtrace unavailable: libunwind could not make an address space)\n");
#else
    (void)uc;
    say(fd, "  (backtrace unavailable: weft was built without libunwind)\n");
#endif
    say(fd, "  entry %s\n  created by %s\n", entry, site);
}

void weft__dump_current_fd(int fd)
{
    weft__dump_current(fd, NULL);
}
