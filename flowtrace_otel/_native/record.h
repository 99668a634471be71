/* flowtrace_otel._native.Record: the C twin of flowtrace_otel.records.Record.
 *
 * The same public fields, by the same names, as records.Record (a test compares the two by
 * introspection), and the same helpers consumers call (run_slices(), detached, repr), so a
 * consumer cannot tell which core built the record it reads.  The Python core's bookkeeping
 * (records.Record's "_" fields) is not here: a C core keeps its own in C structures.
 *
 * Fields: every object field holds a strong reference, never NULL after construction (None
 * by default; `del rec.field` makes it NULL and reading it then raises AttributeError, as an
 * unset slot does).  Integer fields are C integers read and written as Python ints.
 * Records reference their parent, root (a root is its own root) and contexts, so they form
 * cycles: the type takes part in the cyclic GC.
 */
#ifndef FLOWTRACE_NATIVE_RECORD_H
#define FLOWTRACE_NATIVE_RECORD_H

#include "state.h"

typedef struct ft_record {
    PyObject_HEAD
    /* --- the call (strong references, see above) --- */
    PyObject *info;       /* records.CodeInfo */
    PyObject *parent;     /* a Record or None */
    PyObject *root;       /* a Record (itself for a root) */
    PyObject *thread;     /* records.ThreadState */
    PyObject *status;     /* str or None while open */
    /* --- values --- */
    PyObject *args;
    PyObject *result;
    PyObject *exc;
    PyObject *exc_state;
    PyObject *caught;
    PyObject *error;
    /* --- generators, coroutines, tasks --- */
    PyObject *runs;       /* list[int] or None */
    PyObject *task;
    /* --- context tokens and the consumer's state --- */
    PyObject *ctx;
    PyObject *outer_ctx;
    PyObject *ext;
    /* --- C integers (perf_counter_ns values and counters fit in 64 bits) --- */
    long long id;
    long long start;
    long long end;        /* 0 while open */
    long long suspended;
    long long resumes;
    char recording;       /* 0 or 1: exposed as a bool */
} ft_record;

/* A new record, as the monitor builds one at a call's start (monitoring.py's py_start):
 * id, thread, info, parent, contexts and recording set; every other object field None and
 * every other integer 0.  Arguments are borrowed (the record takes its own references);
 * `root` NULL means the record is its own root.  Calls no Python code.  Returns a new
 * reference, or NULL with MemoryError set. */
ft_record *ft_record_new(PyObject *info, PyObject *parent, PyObject *root, PyObject *thread,
                         long long id, PyObject *ctx, PyObject *outer_ctx, int recording);

/* 1 if `obj` is a Record (exactly: the type is not subclassable). */
int ft_record_check(PyObject *obj);

/* Ready the Record type and add it to `module`; -1 with an exception on error. */
int record_add_type(PyObject *module);

#endif
