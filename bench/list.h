/* SPDX-License-Identifier: MIT */
/*
 * The workloads of weft-bench, in the order `weft-bench all` runs them. Each
 * entry names a workload, whose code is bench/NAME.c with its entry point
 * bench_NAME(), and says in a line what it measures. The file is included
 * with WORKLOAD(name, summary) defined, as libuv's benchmark-list.h is:
 * bench.h declares the entry points from it, the driver builds its table.
 *
 * memory comes first because it forks a child for every measurement, and a
 * fork is simplest while the process has no threads but the main one.
 */
WORKLOAD(memory,  "memory per blocked task: resident (RSS) and reserved (address space)")
WORKLOAD(spawn,   "start a task that does nothing and wait for it")
WORKLOAD(switch,  "hand a token between two tasks; the raw context switch")
WORKLOAD(skynet,  "a tree of tasks, fan-out 10, each summing its children's numbers")
WORKLOAD(scaling, "fork-join compute speed-up from 1 worker to every CPU")
WORKLOAD(chan,    "channel throughput, buffered and unbuffered")
WORKLOAD(lock,    "a contended lock")
WORKLOAD(timers,  "how late sleepers wake")
WORKLOAD(mixed,   "thousands of tasks waiting on pipes while others compute on every core")
WORKLOAD(server,  "a loopback TCP echo server, 100 and 1,000 connections")
WORKLOAD(kv,      "the key-value example against redis-server under redis-benchmark, GET and SET")
