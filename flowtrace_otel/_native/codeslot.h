/* The per-code slot: "is this code object wanted?" decided once, and its call statistics.
 * Reached through the code object's co_extra (PyUnstable_Code_GetExtra), never a dict. */
#ifndef FLOWTRACE_NATIVE_CODESLOT_H
#define FLOWTRACE_NATIVE_CODESLOT_H

#include "state.h"

typedef struct code_slot {
    uint64_t generation;      /* flowtrace_state.generation when decided */
    int wanted;               /* the predicate's answer for this generation */
    uint64_t calls;           /* completed calls (PY_RETURN matched to a PY_START) */
    uint64_t total_ns;        /* sum of their durations (inclusive; recursion overlaps) */
    PyObject *code;           /* BORROWED: valid while the slot is linked, because the code's
                                 death calls codeslot_free, which unlinks first */
    struct code_slot *prev;   /* registry of wanted slots (for stats()); NULL when unlinked */
    struct code_slot *next;
    int linked;
} code_slot;

/* Ask CPython for our co_extra index; once per process.  -1 with an exception set on error. */
int codeslot_init(void);

/* The slot of `code`, or NULL if it has none yet.  -1 with an exception on a C-API error. */
int codeslot_get(PyObject *code, code_slot **slot);

/* Create and attach a zeroed slot to `code`.  NULL with an exception on error. */
code_slot *codeslot_attach(PyObject *code);

/* Put a wanted slot in the registry that stats() walks. */
void codeslot_register(code_slot *slot);

/* Empty the registry (a new start()); the slots stay attached to their code objects. */
void codeslot_unregister_all(void);

/* A list of (code, calls, total_ns) for the registered slots.  NULL with an exception. */
PyObject *codeslot_stats(void);

/* How many slots are attached to living code objects. */
Py_ssize_t codeslot_alive(void);

#endif
