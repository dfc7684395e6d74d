# weft's gdb helper: lists a program's coroutines and prints their backtraces,
# in a live process (gdb -p PID, or a program run under gdb) and in a core
# file alike. Load it with
#
#     (gdb) source <prefix>/share/weft/gdb/weft.py
#
# Commands:
#     info weft      every coroutine of every runtime: id, state, what it
#                    waits for, name, entry function, where it was created
#     weft bt N      the backtrace of coroutine N, as a switched-out coroutine
#                    left it (a running one: see its worker's thread)
#
# It reads weft's own structures from the program's debug information, by
# field name, and needs weft built with -g (the default build type,
# RelWithDebInfo, is). The registry it walks is the one weft_dump walks
# (runtime/core/dump.c): the slabs of task handles of each runtime on the list of
# runtimes; a handle in use carries WEFT__TASK_MAGIC.
#
# A coroutine's backtrace is unwound by gdb itself, through a frame unwinder
# (gdb's Python unwinder API) that gives the newest frame of the selected
# thread the coroutine's saved registers as its caller's: gdb's own DWARF
# unwinder then walks the coroutine's stack and stops at weft__ctx_entry,
# whose CFI marks the end. No register is written, so it works on a core file.

import gdb

try:
    from gdb.unwinder import Unwinder
except ImportError:  # gdb without the unwinder API (before 7.10)
    Unwinder = None

TASK_MAGIC = 0x7754534B  # "wTSK", WEFT__TASK_MAGIC in runtime/core/core.h
JOIN_DONE, JOIN_BUSY = 1, 2  # WEFT__JOIN_DONE, WEFT__JOIN_BUSY
PARKED = 1  # WEFT__PARKED

# What each enum weft__why names, by enumerator: the values are read from the
# program, so that a reordering of the enum changes nothing here.
WHY_TEXT = {
    "WEFT__WHY_NONE": "waiting",
    "WEFT__WHY_CHAN_SEND": "chan send",
    "WEFT__WHY_CHAN_RECV": "chan receive",
    "WEFT__WHY_SELECT": "select",
    "WEFT__WHY_MUTEX": "mutex",
    "WEFT__WHY_COND": "condition",
    "WEFT__WHY_WG": "wait group",
    "WEFT__WHY_SEM": "semaphore",
    "WEFT__WHY_JOIN": "join",
    "WEFT__WHY_SLEEP": "sleep",
    "WEFT__WHY_READ": "read",
    "WEFT__WHY_WRITE": "write",
    "WEFT__WHY_ACCEPT": "accept",
    "WEFT__WHY_CONNECT": "connect",
    "WEFT__WHY_POLL": "poll",
    "WEFT__WHY_FILE": "file call",
    "WEFT__WHY_OFFLOAD": "offload",
    "WEFT__WHY_SIGNAL": "signal",
    "WEFT__WHY_CHILD": "child process",
}
FD_WAITS = ("read", "write", "accept", "connect", "poll", "file call")


class WeftError(gdb.GdbError):
    pass


def _arch():
    name = gdb.selected_inferior().architecture().name()
    if "x86-64" in name or "x86_64" in name:
        return "x86_64"
    if "aarch64" in name:
        return "aarch64"
    raise WeftError("weft: unsupported architecture %s" % name)


def _type(name):
    try:
        return gdb.lookup_type(name)
    except gdb.error:
        raise WeftError("weft: no type %s in the debug information; "
                        "build weft with -g" % name)


def _has_field(value, name):
    return any(f.name == name for f in value.type.strip_typedefs().fields())


def _runtimes():
    """Every runtime on weft's list of runtimes (a static `live` of type weft_rt *)."""
    syms = []
    if hasattr(gdb, "lookup_static_symbols"):
        syms = gdb.lookup_static_symbols("live")
    else:
        s = gdb.lookup_static_symbol("live")
        syms = [s] if s else []
    for s in syms:
        v = s.value()
        if v.type.strip_typedefs().code != gdb.TYPE_CODE_PTR:
            continue
        if "weft_rt" not in str(v.type.target().strip_typedefs()):
            continue
        rt = v
        while int(rt) != 0:
            yield rt
            rt = rt["live_next"]
        return
    raise WeftError("weft: no list of runtimes found; is weft linked in, with debug information?")


def _symbol(pc, ret=False):
    """function at file:line, or the nearest symbol, for a code address; ret:
    pc is a return address, so the call is the byte before it."""
    if not pc:
        return "?"
    at = pc - 1 if ret else pc
    name = None
    try:
        block = gdb.block_for_pc(at)
        while block is not None and block.function is None:
            block = block.superblock
        if block is not None:
            name = block.function.print_name
    except RuntimeError:
        pass
    if name is None:
        out = gdb.execute("info symbol 0x%x" % at, to_string=True).strip()
        name = "0x%x" % pc if out.startswith("No symbol") else out.split(" in section")[0]
    sal = gdb.find_pc_line(at)
    if sal.symtab is not None and sal.line:
        return "%s at %s:%d" % (name, sal.symtab.filename, sal.line)
    return name


class Task(object):
    """One coroutine, read from its handle."""

    def __init__(self, rt, handle, workers):
        self.rt = rt
        self.handle = handle
        t = handle.dereference()
        self.id = int(t["id"])
        self.fn = int(t["fn"].cast(_type("unsigned long")))
        self.spawn_pc = int(t["spawn_pc"].cast(_type("unsigned long")))
        self.fiber = t["fiber"]
        self.worker = None
        for i, cur in enumerate(workers):
            if cur == int(handle):
                self.worker = i
        self.name = ""
        self.why = ""
        if int(self.fiber) == 0:
            self.state = "runnable, not started"
            return
        f = self.fiber.dereference()
        if _has_field(f, "spawn_pc"):  # moved from the handle as it first ran
            self.spawn_pc = int(f["spawn_pc"].cast(_type("unsigned long")))
        try:
            self.name = f["name"].string()
        except (gdb.error, UnicodeDecodeError):
            self.name = ""
        if self.worker is not None:
            self.state = "running on worker %d" % self.worker
        elif int(t["pstate"]) == PARKED:
            self.state = "waiting"
            self.why = self._why(f)
        else:
            self.state = "runnable"

    def _why(self, f):
        why = f["why"]
        enum = _type("enum weft__why")
        text = "waiting"
        for field in enum.fields():
            if field.enumval == int(why):
                text = WHY_TEXT.get(field.name, field.name)
        what = int(f["what"])
        if text in FD_WAITS:
            return "%s fd %d" % (text, what if what < 1 << 31 else what - (1 << 64))
        if text == "join":
            try:
                joined = gdb.Value(what).cast(self.handle.type).dereference()
                return "join coroutine %d" % int(joined["id"])
            except gdb.error:
                return "join"
        if text in ("sleep", "waiting"):
            return text
        if text == "select":
            return "select, %d cases" % what
        if text == "offload":
            return "offload %s" % _symbol(what)
        if text in ("signal", "child process"):
            return "%s %d" % (text, what)
        return "%s 0x%x" % (text, what)

    def saved_registers(self):
        """The registers the context switch saved, as {name: int}."""
        ctx = self.fiber.dereference()["ctx"]
        inferior = gdb.selected_inferior()
        if _arch() == "x86_64":
            # arch/ctx.h: sp points at a frame of 8 words: fpctl, rbx, rbp,
            # r12, r13, r14, r15, rip. The switch resumes in its caller's
            # frame, whose CFI expects rsp above that frame and above the
            # 128-byte red zone the switch stepped over.
            sp = int(ctx["sp"])
            words = inferior.read_memory(sp, 64).tobytes()
            w = [int.from_bytes(words[i * 8:i * 8 + 8], "little") for i in range(8)]
            return {"rbx": w[1], "rbp": w[2], "r12": w[3], "r13": w[4], "r14": w[5],
                    "r15": w[6], "rip": w[7], "rsp": sp + 64 + 128}
        regs = {"x%d" % (19 + i): int(ctx["x19_x28"][i]) for i in range(10)}
        regs.update({"x29": int(ctx["fp"]), "x30": int(ctx["lr"]),
                     "sp": int(ctx["sp"]), "pc": int(ctx["lr"])})
        return regs


def _tasks():
    """Every live coroutine of every runtime."""
    task_ptr = _type("struct weft_task").pointer()
    stride = (_type("struct weft_task").sizeof + 63) & ~63
    for rt in _runtimes():
        n = int(rt["nworkers"])
        workers = [int(rt["workers"][i]["current"]) for i in range(n)]
        m = rt["taskmem"].dereference()
        slab = m["slabs"]
        newest = True
        while int(slab) != 0:
            lo = int(slab) + stride  # the header takes the first stride
            hi = int(m["bump"]) if newest else int(slab) + int(slab["len"])
            newest = False
            for at in range(lo, hi - stride + 1, stride):
                handle = gdb.Value(at).cast(task_ptr)
                t = handle.dereference()
                try:
                    if int(t["magic"]) != TASK_MAGIC:
                        continue
                except gdb.MemoryError:
                    continue  # a core file may leave out unused slab pages
                if int(t["join"]) in (JOIN_DONE, JOIN_BUSY):
                    continue  # finished, not yet joined
                yield Task(rt, handle, workers)
            slab = slab["next"]


class InfoWeft(gdb.Command):
    """List weft's coroutines: id, state, wait reason, name, entry function, creator."""

    def __init__(self):
        super(InfoWeft, self).__init__("info weft", gdb.COMMAND_STATUS)

    def invoke(self, arg, from_tty):
        tasks = sorted(_tasks(), key=lambda t: (int(t.rt), t.id))
        print("%6s  %-30s %-24s %s" % ("Id", "State", "Name", "Entry / created by"))
        for t in tasks:
            state = t.why if t.why else t.state
            print("%6d  %-30s %-24s %s" % (t.id, state, '"%s"' % t.name if t.name else "-",
                                            _symbol(t.fn)))
            print("%6s  %-30s %-24s created by %s" % ("", "", "", _symbol(t.spawn_pc, True)))
        print("%d coroutine%s" % (len(tasks), "" if len(tasks) == 1 else "s"))


class _FrameId(object):
    def __init__(self, sp, pc):
        self.sp = sp
        self.pc = pc


_active = None  # {register: value} of the coroutine being walked, or None


if Unwinder is not None:
    class CoroutineUnwinder(Unwinder):
        """While `weft bt` walks a coroutine, the newest frame's caller is the
        coroutine's resume point: its saved registers are returned as the
        newest frame's caller's, and gdb's DWARF unwinder goes on from there."""

        def __init__(self):
            super(CoroutineUnwinder, self).__init__("weft-coroutine")

        def __call__(self, pending_frame):
            if _active is None:
                return None
            if hasattr(pending_frame, "level") and pending_frame.level() != 0:
                return None
            pc_name, sp_name = ("rip", "rsp") if _arch() == "x86_64" else ("pc", "sp")
            sp = pending_frame.read_register(sp_name)
            pc = pending_frame.read_register(pc_name)
            info = pending_frame.create_unwind_info(_FrameId(sp, pc))
            for name, value in _active.items():
                reg_type = pending_frame.read_register(name).type
                info.add_saved_register(name, gdb.Value(value).cast(reg_type))
            return info

    gdb.unwinder.register_unwinder(None, CoroutineUnwinder(), replace=True)


class WeftPrefix(gdb.Command):
    """weft's commands: weft bt N."""

    def __init__(self):
        super(WeftPrefix, self).__init__("weft", gdb.COMMAND_STACK, prefix=True)


class WeftBt(gdb.Command):
    """Print the backtrace of weft coroutine N: weft bt N."""

    def __init__(self):
        super(WeftBt, self).__init__("weft bt", gdb.COMMAND_STACK)

    def invoke(self, arg, from_tty):
        global _active
        try:
            want = int(arg.strip())
        except ValueError:
            raise WeftError("usage: weft bt N, where N is a coroutine's id (info weft)")
        task = None
        for t in _tasks():
            if t.id == want:
                task = t
        if task is None:
            raise WeftError("weft: no coroutine %d" % want)
        print('coroutine %d%s [%s]:' % (task.id, ' "%s"' % task.name if task.name else "",
                                         task.why if task.why else task.state))
        if task.worker is not None:
            print("  running on worker %d: its thread's own backtrace shows it "
                  "(info threads, thread N, bt)" % task.worker)
            return
        if int(task.fiber) == 0:
            print("  not started: no stack yet; entry %s" % _symbol(task.fn))
            return
        if Unwinder is None:
            raise WeftError("weft: this gdb has no Python unwinder API")
        try:
            regs = task.saved_registers()
        except gdb.MemoryError:
            regs = None
        if not regs or not regs.get("rip", regs.get("pc")):
            print("  its stack is not in the core file (or not readable): no backtrace")
            return
        _active = regs
        gdb.invalidate_cached_frames()
        try:
            frame = gdb.newest_frame().older()
            level = 0
            while frame is not None and level < 256:
                pc = frame.pc()
                name = frame.name() or "??"
                sal = frame.find_sal()
                where = ""
                if sal.symtab is not None and sal.line:
                    where = " at %s:%d" % (sal.symtab.filename, sal.line)
                print("#%-3d 0x%016x in %s%s" % (level, pc, name, where))
                frame = frame.older()
                level += 1
        finally:
            _active = None
            gdb.invalidate_cached_frames()
        print("  created by %s" % _symbol(task.spawn_pc, True))


InfoWeft()
WeftPrefix()
WeftBt()
