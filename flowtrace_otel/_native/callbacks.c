/* The hot path: PY_START pushes, PY_RETURN pops; each decides "wanted?" once per code object.
 *
 * Rules of this file:
 *  - Nothing here raises into the user's program except a BaseException that is not an
 *    Exception (KeyboardInterrupt, SystemExit) raised by a signal handler while the predicate
 *    ran: that is the user's own interrupt, and swallowing it would change the program.
 *  - Internal failures (out of memory) are counted in flowtrace_state and the event is dropped.
 *  - The common path calls no Python code: a thread-local read, a co_extra read at PY_START,
 *    a look at the top of the stack at PY_RETURN, two clock reads.
 */
#include "callbacks.h"
#include "clock.h"
#include "threadstack.h"

/* The clock, or 0 when the run is untimed. */
static inline int64_t
now_ns(void)
{
    return flowtrace_state.timed ? flowtrace_monotonic_ns() : 0;
}

/* Count an internal error and clear it: the user's program never sees it. */
static PyObject *
swallow_internal_error(void)
{
    PyErr_Clear();
    flowtrace_state.internal_errors++;
    Py_RETURN_NONE;
}

/* Ask the predicate about `code`: 1 wanted, 0 not, -1 a BaseException to propagate. */
static int
ask_predicate(thread_stack *ts, PyObject *code)
{
    flowtrace_state.predicate_calls++;
    /* The predicate's own events must not re-enter it (it is Python code we trace). */
    ts->in_predicate = 1;
    PyObject *predicate = Py_NewRef(flowtrace_state.predicate);  /* stop() may run inside */
    PyObject *answer = PyObject_CallOneArg(predicate, code);  /* owned */
    Py_DECREF(predicate);
    ts->in_predicate = 0;
    if (answer == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_Exception)) {
            return -1;  /* KeyboardInterrupt, SystemExit...: the program's, let it go on */
        }
        PyErr_Clear();
        flowtrace_state.predicate_errors++;
        return 0;
    }
    int wanted = PyObject_IsTrue(answer);  /* an exact bool from our own predicate */
    Py_DECREF(answer);
    if (wanted < 0) {
        PyErr_Clear();
        flowtrace_state.predicate_errors++;
        return 0;
    }
    return wanted;
}

PyObject *
callbacks_py_start(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int64_t now = now_ns();
    if (nargs < 1 || !flowtrace_state.active) {
        Py_RETURN_NONE;  /* an event queued before stop(): nothing to do */
    }
    PyObject *code = args[0];  /* borrowed from the caller for the duration of the call */
    thread_stack *ts = threadstack_current();
    if (ts == NULL) {
        return swallow_internal_error();
    }
    if (ts->in_predicate) {
        Py_RETURN_NONE;  /* decided neither way: asked again when the predicate is done */
    }
    code_slot *slot = NULL;
    if (codeslot_get(code, &slot) < 0) {
        return swallow_internal_error();
    }
    if (slot == NULL || slot->generation != flowtrace_state.generation) {
        /* First PY_START of this code object since start(): decide once. */
        int wanted = ask_predicate(ts, code);
        if (wanted < 0) {
            return NULL;
        }
        if (!flowtrace_state.active) {
            Py_RETURN_NONE;  /* the predicate's code stopped us */
        }
        /* The predicate is Python code: another thread may have run this code object's first
           PY_START and attached (and decided) a slot meanwhile.  Read it again, so a slot is
           never replaced: a replaced slot would stay registered after its code died. */
        if (codeslot_get(code, &slot) < 0) {
            return swallow_internal_error();
        }
        if (slot == NULL && (slot = codeslot_attach(code)) == NULL) {
            return swallow_internal_error();
        }
        if (slot->generation != flowtrace_state.generation) {
            slot->generation = flowtrace_state.generation;
            slot->wanted = wanted;
            slot->calls = 0;
            slot->total_ns = 0;
            if (wanted) {
                codeslot_register(slot);
            }
        }
        now = now_ns();  /* the predicate's time is not the call's */
    }
    if (!slot->wanted) {
        /* Per (tool, code, offset): this code's PY_START never reaches us again. */
        return Py_NewRef(flowtrace_state.disable);
    }
    if (threadstack_push(ts, code, slot, now) < 0) {
        return swallow_internal_error();
    }
    Py_RETURN_NONE;
}

PyObject *
callbacks_py_return(PyObject *Py_UNUSED(module), PyObject *const *args, Py_ssize_t nargs)
{
    int64_t now = now_ns();
    if (nargs < 1 || !flowtrace_state.active) {
        Py_RETURN_NONE;
    }
    PyObject *code = args[0];  /* borrowed */
    thread_stack *ts = threadstack_current();
    if (ts == NULL) {
        return swallow_internal_error();
    }
    stack_entry *top = threadstack_top_for(ts, code);
    if (top != NULL) {
        /* The common case: the innermost call returns.  Its code is wanted in this generation
           (only such calls are pushed, and stop() empties every stack). */
        code_slot *slot = top->slot;
        int64_t start_ns = top->start_ns;
        ts->depth--;
        slot->calls++;
        slot->total_ns += (uint64_t)(now - start_ns);
        Py_DECREF(code);  /* the entry's reference; the caller still holds its own */
        Py_RETURN_NONE;
    }
    code_slot *slot = NULL;
    if (codeslot_get(code, &slot) < 0) {
        return swallow_internal_error();
    }
    if (slot == NULL || slot->generation != flowtrace_state.generation) {
        Py_RETURN_NONE;  /* started before start() or inside the predicate: undecided */
    }
    if (!slot->wanted) {
        return Py_NewRef(flowtrace_state.disable);
    }
    int64_t start_ns = 0;
    code_slot *popped = NULL;
    if (!threadstack_pop(ts, code, &start_ns, &popped)) {
        flowtrace_state.unmatched_returns++;
        Py_RETURN_NONE;
    }
    popped->calls++;
    popped->total_ns += (uint64_t)(now - start_ns);
    Py_RETURN_NONE;
}
