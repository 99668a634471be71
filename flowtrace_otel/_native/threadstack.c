/* Per-thread call stacks.
 *
 * Lifetime: the thread_stack is owned by a capsule stored in the thread state's dict
 * (PyThreadState_GetDict).  CPython clears that dict in PyThreadState_Clear: when a thread
 * exits, at interpreter finalization, and in a forked child for the threads that do not exist
 * there.  The capsule's destructor releases the stack's code references and frees it.
 * The thread-local pointer is only a cache for the hot path: the destructor resets it when it
 * runs on the owning OS thread; when it runs on another one (finalization, fork child), the
 * owning OS thread is gone or can never run Python again, so its stale value is never read.
 */
#include "threadstack.h"

/* The hot-path cache: this OS thread's stack.  C11 thread-local storage, in the initial-exec
   model under GCC/clang so a read is one %fs-relative load (Python's Py_tss_t costs a
   pthread_getspecific call, measured at ~70 instructions per event here). */
#if defined(__GNUC__)
#define FLOWTRACE_TLS _Thread_local __attribute__((tls_model("initial-exec")))
#else
#define FLOWTRACE_TLS _Thread_local
#endif
static FLOWTRACE_TLS thread_stack *current_stack = NULL;
static PyObject *dict_key = NULL;        /* strong, interned; lives for the process */
static thread_stack *all_stacks = NULL;  /* every living thread_stack (GIL protects it) */
static Py_ssize_t stack_count = 0;

static void
clear_entries(thread_stack *ts)
{
    /* Pop first, then release: a DECREF may free a code object, whose slot free function
       must not see this stack half-updated. */
    while (ts->depth > 0) {
        ts->depth--;
        PyObject *code = ts->entries[ts->depth].code;  /* our strong ref, released here */
        ts->entries[ts->depth].code = NULL;
        Py_XDECREF(code);
    }
}

static void
capsule_destructor(PyObject *capsule)
{
    thread_stack *ts = (thread_stack *)PyCapsule_GetPointer(capsule, "flowtrace_otel._native.stack");
    if (ts == NULL) {
        PyErr_Clear();  /* cannot happen for our own capsule; never leave an error set */
        return;
    }
    clear_entries(ts);
    /* Unbind before releasing: a DECREF may run a destructor that reaches a callback. */
    PyObject *state = ts->hot_state;
    PyObject *stack = ts->hot_stack;
    ts->hot_generation = 0;
    ts->hot_state = NULL;
    ts->hot_stack = NULL;
    Py_XDECREF(stack);
    Py_XDECREF(state);
    if (ts->prev != NULL) {
        ts->prev->next = ts->next;
    }
    else {
        all_stacks = ts->next;
    }
    if (ts->next != NULL) {
        ts->next->prev = ts->prev;
    }
    stack_count--;
    if (current_stack == ts) {
        current_stack = NULL;
    }
    PyMem_RawFree(ts->entries);
    PyMem_RawFree(ts);
}

int
threadstack_init(void)
{
    if (dict_key != NULL) {
        return 0;
    }
    dict_key = PyUnicode_InternFromString("flowtrace_otel._native.stack");
    return dict_key == NULL ? -1 : 0;
}

static thread_stack *
create_stack(void)
{
    PyObject *dict = PyThreadState_GetDict();  /* borrowed; NULL without exception on failure */
    if (dict == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "flowtrace_otel._native: no thread state dict");
        return NULL;
    }
    thread_stack *ts = (thread_stack *)PyMem_RawCalloc(1, sizeof(thread_stack));
    if (ts == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    PyObject *capsule = PyCapsule_New(ts, "flowtrace_otel._native.stack", NULL);  /* owned */
    if (capsule == NULL) {
        PyMem_RawFree(ts);
        return NULL;
    }
    if (PyDict_SetItem(dict, dict_key, capsule) < 0) {
        Py_DECREF(capsule);  /* no destructor yet: frees only the capsule */
        PyMem_RawFree(ts);
        return NULL;
    }
    /* The dict holds the capsule now; from here the destructor owns ts. */
    ts->next = all_stacks;
    if (all_stacks != NULL) {
        all_stacks->prev = ts;
    }
    all_stacks = ts;
    stack_count++;
    if (PyCapsule_SetDestructor(capsule, capsule_destructor) < 0) {
        Py_DECREF(capsule);
        return NULL;  /* unreachable for a valid capsule; ts stays owned by the dict's capsule */
    }
    Py_DECREF(capsule);  /* our reference; the dict keeps its own */
    current_stack = ts;
    return ts;
}

thread_stack *
threadstack_current(void)
{
    thread_stack *ts = current_stack;
    if (ts != NULL) {
        return ts;
    }
    return create_stack();
}

int
threadstack_push(thread_stack *ts, PyObject *code, code_slot *slot, int64_t now)
{
    if (ts->depth == ts->capacity) {
        Py_ssize_t capacity = ts->capacity ? ts->capacity * 2 : 64;
        stack_entry *grown = (stack_entry *)PyMem_RawRealloc(ts->entries,
                                                             (size_t)capacity * sizeof(stack_entry));
        if (grown == NULL) {
            PyErr_NoMemory();
            return -1;  /* the old array is untouched and still ours */
        }
        ts->entries = grown;
        ts->capacity = capacity;
    }
    stack_entry *entry = &ts->entries[ts->depth];
    entry->code = Py_NewRef(code);  /* strong: released by threadstack_pop or clear_entries */
    entry->slot = slot;
    entry->start_ns = now;
    ts->depth++;
    return 0;
}

int
threadstack_pop(thread_stack *ts, PyObject *code, int64_t *start_ns, code_slot **slot)
{
    Py_ssize_t at = ts->depth - 1;
    /* Invariant: entries above the innermost one for `code` are calls that left without a
       PY_RETURN (an exception unwound them; PY_UNWIND is not monitored here). */
    while (at >= 0 && ts->entries[at].code != code) {
        at--;
    }
    if (at < 0) {
        return 0;
    }
    *start_ns = ts->entries[at].start_ns;
    *slot = ts->entries[at].slot;
    /* Detach the entries first, then release them (see clear_entries).  The slot stays valid
       after the DECREF: `code` is alive, it is the object whose PY_RETURN we are handling. */
    Py_ssize_t old_depth = ts->depth;
    ts->depth = at;
    for (Py_ssize_t i = old_depth - 1; i >= at; i--) {
        PyObject *held = ts->entries[i].code;
        ts->entries[i].code = NULL;
        Py_DECREF(held);
    }
    return 1;
}

void
threadstack_clear_all(void)
{
    for (thread_stack *ts = all_stacks; ts != NULL; ts = ts->next) {
        clear_entries(ts);
    }
}

void
threadstack_unbind(uint64_t generation)
{
    thread_stack *ts = all_stacks;
    while (ts != NULL) {
        thread_stack *next = ts->next;  /* a DECREF below frees no thread stack */
        if (ts->hot_generation == generation) {
            /* Unbind before releasing (see capsule_destructor). */
            PyObject *state = ts->hot_state;
            PyObject *stack = ts->hot_stack;
            ts->hot_generation = 0;
            ts->hot_state = NULL;
            ts->hot_stack = NULL;
            Py_XDECREF(stack);
            Py_XDECREF(state);
        }
        ts = next;
    }
}

Py_ssize_t
threadstack_count(void)
{
    return stack_count;
}
