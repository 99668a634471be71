/* flowtrace_otel._native: start(tool_id, predicate), stop(), stats(), and Capturer
 * (capture.c: the value-to-text part of argument and result capture), and Record (record.c:
 * records.Record's public fields in C), and HotPath (monitor.c: the native core's
 * PY_START/PY_RETURN callbacks, used by flowtrace_otel/native_monitor.py).
 *
 * The building block of the native core (docs/native.md): C sys.monitoring callbacks for
 * PY_START/PY_RETURN that decide once per code object, keep a per-thread stack with monotonic
 * clock reads, and count calls and time per wanted code object.  See state.h for what this
 * code assumes of the interpreter (GIL build, one interpreter, 3.12/3.13).
 */
#include <stdarg.h>

#include "callbacks.h"
#include "capture.h"
#include "codeslot.h"
#include "monitor.h"
#include "record.h"
#include "threadstack.h"

native_state flowtrace_state = {0};

/* Process-lifetime strong references, created at import. */
static PyObject *py_start_func = NULL;
static PyObject *py_return_func = NULL;

static PyMethodDef callback_defs[] = {
    {"_py_start", (PyCFunction)(void (*)(void))callbacks_py_start, METH_FASTCALL,
     "PY_START callback."},
    {"_py_return", (PyCFunction)(void (*)(void))callbacks_py_return, METH_FASTCALL,
     "PY_RETURN callback."},
};

/* sys.monitoring, owned by the caller. */
static PyObject *
monitoring_module(void)
{
    PyObject *sys = PyImport_ImportModule("sys");  /* owned */
    if (sys == NULL) {
        return NULL;
    }
    PyObject *monitoring = PyObject_GetAttrString(sys, "monitoring");  /* owned */
    Py_DECREF(sys);
    return monitoring;
}

/* sys.monitoring.events.<name> as a C long; -1 with an exception on error. */
static long
event_bit(PyObject *monitoring, const char *name)
{
    PyObject *events = PyObject_GetAttrString(monitoring, "events");  /* owned */
    if (events == NULL) {
        return -1;
    }
    PyObject *bit = PyObject_GetAttrString(events, name);  /* owned */
    Py_DECREF(events);
    if (bit == NULL) {
        return -1;
    }
    long value = PyLong_AsLong(bit);
    Py_DECREF(bit);
    return value;
}

/* monitoring.<method>(*args) ignoring the result; -1 with an exception on error. */
static int
call_method(PyObject *obj, const char *method, const char *format, ...)
{
    va_list va;
    va_start(va, format);
    PyObject *callable = PyObject_GetAttrString(obj, method);  /* owned */
    PyObject *args = callable ? Py_VaBuildValue(format, va) : NULL;  /* owned (a tuple) */
    va_end(va);
    if (args == NULL) {
        Py_XDECREF(callable);
        return -1;
    }
    PyObject *result = PyObject_CallObject(callable, args);  /* owned */
    Py_DECREF(args);
    Py_DECREF(callable);
    if (result == NULL) {
        return -1;
    }
    Py_DECREF(result);
    return 0;
}

/* Register or unregister (callback None) our two callbacks; -1 with an exception. */
static int
set_callbacks(PyObject *monitoring, int tool, PyObject *start_cb, PyObject *return_cb)
{
    long start_bit = event_bit(monitoring, "PY_START");
    long return_bit = event_bit(monitoring, "PY_RETURN");
    if (start_bit < 0 || return_bit < 0) {
        return -1;
    }
    if (call_method(monitoring, "register_callback", "(ilO)", tool, start_bit, start_cb) < 0 ||
        call_method(monitoring, "register_callback", "(ilO)", tool, return_bit, return_cb) < 0) {
        return -1;
    }
    return call_method(monitoring, "set_events", "(il)", tool,
                       (start_cb == Py_None) ? 0L : (start_bit | return_bit));
}

/* atexit.<method>(stop): keeps the tool from outliving the interpreter's Python layer. */
static int
atexit_call(const char *method)
{
    PyObject *atexit = PyImport_ImportModule("atexit");  /* owned */
    if (atexit == NULL) {
        return -1;
    }
    int rc = call_method(atexit, method, "(O)", flowtrace_state.stop_func);
    Py_DECREF(atexit);
    return rc;
}

/* Undo start(); best effort, returns -1 with the first error set if a step failed. */
static int
teardown(void)
{
    int rc = 0;
    PyObject *monitoring = monitoring_module();  /* owned */
    flowtrace_state.active = 0;  /* first: queued events return at once */
    if (monitoring == NULL) {
        rc = -1;
    }
    else {
        if (set_callbacks(monitoring, flowtrace_state.tool_id, Py_None, Py_None) < 0) {
            rc = -1;
        }
        /* free_tool_id must run even if the above failed, or the id stays taken. */
        PyObject *pending = rc < 0 ? PyErr_GetRaisedException() : NULL;  /* owned */
        if (call_method(monitoring, "free_tool_id", "(i)", flowtrace_state.tool_id) < 0) {
            rc = -1;
            if (pending != NULL) {
                PyErr_Clear();
            }
        }
        if (pending != NULL) {
            PyErr_SetRaisedException(pending);  /* steals the reference */
        }
        Py_DECREF(monitoring);
    }
    threadstack_clear_all();
    Py_CLEAR(flowtrace_state.predicate);
    Py_CLEAR(flowtrace_state.disable);
    return rc;
}

static PyObject *
native_start(PyObject *Py_UNUSED(module), PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"tool_id", "predicate", "timed", NULL};
    int tool_id;
    PyObject *predicate;  /* borrowed from args */
    int timed = 1;
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "iO|p:start", keywords,
                                     &tool_id, &predicate, &timed)) {
        return NULL;
    }
    if (flowtrace_state.active) {
        PyErr_SetString(PyExc_RuntimeError, "flowtrace_otel._native is already started");
        return NULL;
    }
    if (!PyCallable_Check(predicate)) {
        PyErr_SetString(PyExc_TypeError, "start(tool_id, predicate): predicate must be callable");
        return NULL;
    }
    if (codeslot_init() < 0 || threadstack_init() < 0) {
        return NULL;
    }
    PyObject *monitoring = monitoring_module();  /* owned */
    if (monitoring == NULL) {
        return NULL;
    }
    /* use_tool_id raises ValueError when the id is taken: our caller reports it. */
    if (call_method(monitoring, "use_tool_id", "(is)", tool_id, "flowtrace_otel-native") < 0) {
        Py_DECREF(monitoring);
        return NULL;
    }
    /* DISABLE is remembered per (tool, code, offset) across free_tool_id/use_tool_id in 3.12
       and 3.13 (3.14 adds clear_tool_id).  A second start() in a process would inherit the
       previous predicate's "unwanted" answers, so it re-enables them first; this also
       re-enables other tools' DISABLEd locations once (a cost to them, not a change). */
    if (flowtrace_state.generation > 0 &&
        call_method(monitoring, "restart_events", "()") < 0) {
        (void)call_method(monitoring, "free_tool_id", "(i)", tool_id);
        Py_DECREF(monitoring);
        return NULL;
    }
    PyObject *disable = PyObject_GetAttrString(monitoring, "DISABLE");  /* owned */
    if (disable == NULL) {
        (void)call_method(monitoring, "free_tool_id", "(i)", tool_id);
        Py_DECREF(monitoring);
        return NULL;
    }
    flowtrace_state.tool_id = tool_id;
    flowtrace_state.timed = timed;
    flowtrace_state.predicate = Py_NewRef(predicate);
    flowtrace_state.disable = disable;  /* the reference moves into the state */
    flowtrace_state.generation++;  /* every earlier per-code decision is now stale */
    flowtrace_state.predicate_calls = 0;
    flowtrace_state.predicate_errors = 0;
    flowtrace_state.internal_errors = 0;
    flowtrace_state.unmatched_returns = 0;
    codeslot_unregister_all();
    flowtrace_state.active = 1;
    if (set_callbacks(monitoring, tool_id, py_start_func, py_return_func) < 0 ||
        atexit_call("register") < 0) {
        Py_DECREF(monitoring);
        PyObject *error = PyErr_GetRaisedException();  /* owned; the reason start failed */
        (void)teardown();
        PyErr_Clear();
        PyErr_SetRaisedException(error);
        return NULL;
    }
    Py_DECREF(monitoring);
    Py_RETURN_NONE;
}

static PyObject *
native_stop(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    if (!flowtrace_state.active) {
        Py_RETURN_NONE;  /* idempotent: atexit may call it after an explicit stop() */
    }
    int rc = teardown();
    PyObject *pending = rc < 0 ? PyErr_GetRaisedException() : NULL;  /* owned */
    if (atexit_call("unregister") < 0) {
        PyErr_Clear();  /* at exit atexit may already be gone; nothing else to undo */
    }
    if (pending != NULL) {
        PyErr_SetRaisedException(pending);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
native_stats(PyObject *Py_UNUSED(module), PyObject *Py_UNUSED(ignored))
{
    PyObject *codes = codeslot_stats();  /* owned, moved into the dict by "N" */
    if (codes == NULL) {
        return NULL;
    }
    return Py_BuildValue(
        "{s:N,s:O,s:n,s:n,s:K,s:K,s:K,s:K}",
        "codes", codes,
        "active", flowtrace_state.active ? Py_True : Py_False,
        "threads", threadstack_count(),
        "slots", codeslot_alive(),
        "predicate_calls", (unsigned long long)flowtrace_state.predicate_calls,
        "predicate_errors", (unsigned long long)flowtrace_state.predicate_errors,
        "internal_errors", (unsigned long long)flowtrace_state.internal_errors,
        "unmatched_returns", (unsigned long long)flowtrace_state.unmatched_returns);
}

static PyMethodDef native_methods[] = {
    {"start", (PyCFunction)(void (*)(void))native_start, METH_VARARGS | METH_KEYWORDS,
     "start(tool_id, predicate, timed=True): monitor PY_START/PY_RETURN; predicate(code) -> "
     "bool, asked once per code object; timed=False skips the clock (to measure its cost)."},
    {"stop", native_stop, METH_NOARGS, "stop(): release the tool id and every recorded stack."},
    {"stats", native_stats, METH_NOARGS,
     "stats(): {'codes': [(code, calls, total_ns)], 'threads': n, 'slots': n, counters...}."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef native_module = {
    PyModuleDef_HEAD_INIT,
    .m_name = "flowtrace_otel._native",
    .m_doc = "The native core's building block: C sys.monitoring callbacks (docs/native.md).",
    .m_size = -1,  /* single-phase init: one interpreter, see state.h */
    .m_methods = native_methods,
};

PyMODINIT_FUNC
PyInit__native(void)
{
    PyObject *module = PyModule_Create(&native_module);  /* owned, returned */
    if (module == NULL) {
        return NULL;
    }
    if (py_start_func == NULL) {
        py_start_func = PyCFunction_NewEx(&callback_defs[0], NULL, NULL);
        py_return_func = PyCFunction_NewEx(&callback_defs[1], NULL, NULL);
        if (py_start_func == NULL || py_return_func == NULL) {
            Py_CLEAR(py_start_func);
            Py_CLEAR(py_return_func);
            Py_DECREF(module);
            return NULL;
        }
    }
    if (capture_add_type(module) < 0 || record_add_type(module) < 0 ||
        monitor_add_type(module) < 0) {
        Py_DECREF(module);
        return NULL;
    }
    /* owned by the state; a re-import replaces (and releases) the previous one */
    Py_XSETREF(flowtrace_state.stop_func, PyObject_GetAttrString(module, "stop"));
    if (flowtrace_state.stop_func == NULL) {
        Py_DECREF(module);
        return NULL;
    }
    return module;
}
