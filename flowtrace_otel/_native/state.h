/* Process-wide state of the native building block.
 *
 * Assumptions (stated once here, relied on everywhere):
 *  - A GIL build of CPython 3.12 or 3.13.  Every function in this folder runs with the GIL held
 *    (sys.monitoring calls callbacks with it; start/stop/stats are ordinary builtins), so plain
 *    C globals need no lock.  Free-threaded builds (3.13t) are out of scope: the module is built
 *    without Py_mod_gil support and CPython re-enables the GIL when it is imported there.
 *  - One interpreter: single-phase init, so CPython refuses to import the module into a
 *    sub-interpreter with its own GIL.  The globals below are therefore the module's state.
 *  - No user code is ever called: the only Python callable the building block's callbacks
 *    (callbacks.c) call is the predicate that the tracer itself passes to start(), and only on
 *    the first PY_START of a code object.  The native core's hot path (monitor.c) calls only
 *    the tracer's own callables; its header comment lists them.
 */
#ifndef FLOWTRACE_NATIVE_STATE_H
#define FLOWTRACE_NATIVE_STATE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

typedef struct {
    int active;                 /* 1 between start() and stop() */
    int tool_id;                /* the sys.monitoring tool id we hold while active */
    int timed;                  /* read the clock per call (start(..., timed=True)); off only
                                   to measure what the clock reads cost (bench/native_floor.py) */
    uint64_t generation;        /* bumped by every start(): per-code decisions older than this
                                   are stale and asked again */
    PyObject *predicate;        /* strong ref, owned here while active; NULL otherwise */
    PyObject *disable;          /* strong ref to sys.monitoring.DISABLE while active */
    PyObject *stop_func;        /* strong ref to our stop(), registered with atexit */
    uint64_t predicate_calls;   /* how many decisions were asked of the predicate */
    uint64_t predicate_errors;  /* predicate raised an Exception: the code is not wanted */
    uint64_t internal_errors;   /* an allocation failed inside a callback: event not recorded */
    uint64_t unmatched_returns; /* PY_RETURN of a call whose PY_START we did not see */
} native_state;

extern native_state flowtrace_state;

#endif
