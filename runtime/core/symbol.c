/* SPDX-License-Identifier: MIT */
/*
 * Names of code addresses for weft_dump and fatal messages (core/dump.h):
 * "function+0xoff (object)", from libunwind's lookup, which reads the
 * object's symbol table and so names static functions too, or else from
 * dladdr, which knows only exported ones; cached by address for one dump.
 */
#include "dump.h"

#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

const char *weft__base_name(const char *path)
{
    const char *slash = path ? strrchr(path, '/') : NULL;
    return slash ? slash + 1 : path ? path : "?";
}

void weft__describe(struct weft__symtab *st, uintptr_t pc, bool ret, char *buf, size_t len)
{
    uintptr_t at = ret && pc ? pc - 1 : pc;
    Dl_info info;
    bool have_obj = dladdr((void *)at, &info) != 0;
    const char *obj = have_obj ? weft__base_name(info.dli_fname) : "?";
#if WEFT_HAVE_LIBUNWIND
    if (st->as) {
        char fn[256];
        unw_word_t off;
        unw_accessors_t *a = unw_get_accessors(st->as);
        if (a->get_proc_name && a->get_proc_name(st->as, at, fn, sizeof(fn), &off, NULL) == 0) {
            off += at != pc;
            if (off)
                snprintf(buf, len, "%s+0x%lx (%s)", fn, (unsigned long)off, obj);
            else
                snprintf(buf, len, "%s (%s)", fn, obj);
            return;
        }
    }
#endif
    if (have_obj && info.dli_sname) {
        snprintf(buf, len, "%s+0x%lx (%s)", info.dli_sname,
                 (unsigned long)(pc - (uintptr_t)info.dli_saddr), obj);
    } else if (have_obj) {
        snprintf(buf, len, "?? (%s+0x%lx)", obj,   /* for addr2line -e OBJECT */
                 (unsigned long)(pc - (uintptr_t)info.dli_fbase));
    } else {
        snprintf(buf, len, "0x%lx", (unsigned long)pc);
    }
}

const char *weft__sym_name(struct weft__symtab *st, uintptr_t pc, bool ret)
{
    uintptr_t key = pc ^ (uintptr_t)ret;   /* a return address and an entry point differ */
    if (st->n * 2 >= st->cap) {
        size_t cap = st->cap ? st->cap * 2 : 256;
        struct weft__sym *at = calloc(cap, sizeof(*at));
        if (!at)
            return "?";
        for (size_t i = 0; i < st->cap; i++) {
            if (!st->at[i].name)
                continue;
            size_t h = (st->at[i].pc * 0x9e3779b97f4a7c15ull) >> 20 & (cap - 1);
            while (at[h].name)
                h = (h + 1) & (cap - 1);
            at[h] = st->at[i];
        }
        free(st->at);
        st->at = at;
        st->cap = cap;
    }
    size_t h = (key * 0x9e3779b97f4a7c15ull) >> 20 & (st->cap - 1);
    for (; st->at[h].name; h = (h + 1) & (st->cap - 1))
        if (st->at[h].pc == key)
            return st->at[h].name;
    char buf[320];
    weft__describe(st, pc, ret, buf, sizeof(buf));
    char *name = strdup(buf);
    if (!name)
        return "?";
    st->at[h] = (struct weft__sym){ .pc = key, .name = name };
    st->n++;
    return name;
}

void weft__symtab_free(struct weft__symtab *st)
{
    for (size_t i = 0; i < st->cap; i++)
        free(st->at[i].name);
    free(st->at);
}
