/* Per-thread call stack: one struct per Python thread state, reached through a thread-local
 * pointer on the hot path, owned by a capsule in the thread state's dict so that CPython frees it when the
 * thread state is cleared (thread exit, interpreter finalization, other threads after fork). */
#ifndef FLOWTRACE_NATIVE_THREADSTACK_H
#define FLOWTRACE_NATIVE_THREADSTACK_H

#include "codeslot.h"

typedef struct {
    PyObject *code;           /* STRONG ref: keeps code (and so its slot) alive while the entry
                                 is on the stack, even if the call unwound without PY_RETURN */
    code_slot *slot;          /* valid while `code` is held */
    int64_t start_ns;
} stack_entry;

typedef struct thread_stack {
    stack_entry *entries;     /* PyMem_Raw; `depth` used of `capacity` */
    Py_ssize_t depth;
    Py_ssize_t capacity;
    int in_predicate;         /* 1 while this thread runs the predicate: ignore its events */
    /* The native core's binding (monitor.c): this thread's ThreadState of the HotPath whose
       generation is hot_generation (0: none yet).  Strong references, released with the
       stack (thread exit, finalization, fork child) or when a newer HotPath rebinds, or
       when the HotPath is closed (threadstack_unbind). */
    uint64_t hot_generation;
    PyObject *hot_state;      /* STRONG: records.ThreadState */
    PyObject *hot_stack;      /* STRONG: hot_state.stack, a list (never replaced by the core) */
    struct thread_stack *prev; /* all living thread stacks, for stop() and stats() */
    struct thread_stack *next;
} thread_stack;

/* Create the thread-dict key; once per process.  -1 with an exception on error. */
int threadstack_init(void);

/* This thread's stack, created on first use.  NULL with an exception on error. */
thread_stack *threadstack_current(void);

/* Push a call; -1 (with an exception) only on allocation failure. */
int threadstack_push(thread_stack *ts, PyObject *code, code_slot *slot, int64_t now);

/* The innermost entry if it is a call of `code`, else NULL: the common PY_RETURN. */
static inline stack_entry *
threadstack_top_for(thread_stack *ts, PyObject *code)
{
    if (ts->depth > 0 && ts->entries[ts->depth - 1].code == code) {
        return &ts->entries[ts->depth - 1];
    }
    return NULL;
}

/* Pop the innermost entry for `code`, dropping entries above it (calls that unwound without a
   PY_RETURN); returns 1 and fills *start_ns / *slot if found, 0 if `code` is not on the stack. */
int threadstack_pop(thread_stack *ts, PyObject *code, int64_t *start_ns, code_slot **slot);

/* Empty every thread's stack (releases the code references); used by stop(). */
void threadstack_clear_all(void);

/* Drop every thread's binding to the HotPath of `generation` (its monitor stopped): releases
   the ThreadState references it held (monitor.c). */
void threadstack_unbind(uint64_t generation);

/* Number of living thread stacks (for stats() and the thread-exit test). */
Py_ssize_t threadstack_count(void);

#endif
