/* SPDX-License-Identifier: MIT */
/*
 * Names of code addresses for weft_dump and fatal messages (core/dump.h):
 * "function+0xoff (object)", from libunwind's lookup, which reads the
 * object's symbol table and so names static functions too, or else from
 * dladdr, which knows only exported ones; cached by address for one dump,
 * with the source positions core/srcline.c finds for them.
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

void weft__name_at(char *buf, size_t len, const char *fn, uintptr_t off, const char *obj)
{
    if (off)
        snprintf(buf, len, "%s+0x%lx (%s)", fn, (unsigned long)off, obj);
    else
        snprintf(buf, len, "%s (%s)", fn, obj);
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
            weft__name_at(buf, len, fn, off + (at != pc), obj);
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

/* The place of key in st: where it is, or the free place where it goes.
 * st->cap is not 0. */
static struct weft__sym *place(const struct weft__symtab *st, uintptr_t key)
{
    size_t h = (key * 0x9e3779b97f4a7c15ull) >> 20 & (st->cap - 1);
    while (st->at[h].name && st->at[h].pc != key)
        h = (h + 1) & (st->cap - 1);
    return &st->at[h];
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
    struct weft__sym *sym = place(st, key);
    if (sym->name)
        return sym->name;
    char buf[320];
    weft__describe(st, pc, ret, buf, sizeof(buf));
    char *name = strdup(buf);
    if (!name)
        return "?";
    *sym = (struct weft__sym){ .pc = key, .at = ret && pc ? pc - 1 : pc, .name = name };
    st->n++;
    return name;
}

const char *weft__sym_src(struct weft__symtab *st, uintptr_t pc, bool ret)
{
    return st->cap ? place(st, pc ^ (uintptr_t)ret)->src : NULL;
}

void weft__sym_lines(struct weft__symtab *st)
{
    size_t n = 0;
    for (size_t i = 0; i < st->cap; i++)
        n += st->at[i].name && !st->at[i].looked;
    struct weft__srcpos *pos = n ? calloc(n, sizeof(*pos)) : NULL;
    if (!pos)
        return;   /* nothing to look for, or no memory: the names stand alone */
    size_t k = 0;
    for (size_t i = 0; i < st->cap; i++)
        if (st->at[i].name && !st->at[i].looked)
            pos[k++].pc = st->at[i].at;
    weft__srcpos_find(pos, n);
    k = 0;
    for (size_t i = 0; i < st->cap; i++) {
        struct weft__sym *sym = &st->at[i];
        if (!sym->name || sym->looked)
            continue;
        sym->looked = true;
        const struct weft__srcpos *p = &pos[k++];
        char buf[sizeof(p->file) + 16];
        if (p->line && snprintf(buf, sizeof(buf), "%s:%u", p->file, p->line) > 0)
            sym->src = strdup(buf);   /* NULL without memory: the name stands alone */
    }
    free(pos);
}

void weft__symtab_free(struct weft__symtab *st)
{
    for (size_t i = 0; i < st->cap; i++) {
        free(st->at[i].name);
        free(st->at[i].src);
    }
    free(st->at);
}
