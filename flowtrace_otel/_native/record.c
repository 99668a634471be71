/* flowtrace_otel._native.Record: records.Record's public fields and helpers in C (record.h). */
#include <stddef.h>

#include "record.h"

static PyTypeObject record_type;

ft_record *
ft_record_new(PyObject *info, PyObject *parent, PyObject *root, PyObject *thread,
              long long id, PyObject *ctx, PyObject *outer_ctx, int recording)
{
    ft_record *self = PyObject_GC_New(ft_record, &record_type);  /* owned, returned */
    if (self == NULL) {
        return NULL;
    }
    /* Invariant: every object field holds a strong reference from here on (None by
       default), so traverse/clear/dealloc see a fully initialised record. */
    self->info = Py_NewRef(info);
    self->parent = Py_NewRef(parent);
    /* a root is its own root: a reference cycle by design, broken by the GC */
    self->root = Py_NewRef(root != NULL ? root : (PyObject *)self);
    self->thread = Py_NewRef(thread);
    self->status = Py_NewRef(Py_None);
    self->args = Py_NewRef(Py_None);
    self->result = Py_NewRef(Py_None);
    self->exc = Py_NewRef(Py_None);
    self->exc_state = Py_NewRef(Py_None);
    self->caught = Py_NewRef(Py_None);
    self->error = Py_NewRef(Py_None);
    self->runs = Py_NewRef(Py_None);
    self->task = Py_NewRef(Py_None);
    self->ctx = Py_NewRef(ctx);
    self->outer_ctx = Py_NewRef(outer_ctx);
    self->ext = Py_NewRef(Py_None);
    self->id = id;
    self->start = 0;
    self->end = 0;
    self->suspended = 0;
    self->resumes = 0;
    self->recording = recording ? 1 : 0;
    PyObject_GC_Track((PyObject *)self);  /* only once every field is set */
    return self;
}

int
ft_record_check(PyObject *obj)
{
    return Py_IS_TYPE(obj, &record_type);
}

/* Record(**fields): for tests and Python callers; the monitor calls ft_record_new. */
static PyObject *
record_py_new(PyTypeObject *Py_UNUSED(type), PyObject *args, PyObject *kwargs)
{
    if (PyTuple_GET_SIZE(args) != 0) {
        PyErr_SetString(PyExc_TypeError, "Record() takes keyword arguments only");
        return NULL;
    }
    ft_record *self = ft_record_new(Py_None, Py_None, NULL, Py_None, 0, Py_None, Py_None, 0);
    if (self == NULL) {  /* owned from here */
        return NULL;
    }
    if (kwargs != NULL) {
        PyObject *key, *value;  /* borrowed from kwargs */
        Py_ssize_t pos = 0;
        while (PyDict_Next(kwargs, &pos, &key, &value)) {
            /* the member descriptors check names and types (unknown name: AttributeError) */
            if (PyObject_SetAttr((PyObject *)self, key, value) < 0) {
                Py_DECREF(self);
                return NULL;
            }
        }
    }
    return (PyObject *)self;
}

static int
record_traverse(ft_record *self, visitproc visit, void *arg)
{
    Py_VISIT(self->info);
    Py_VISIT(self->parent);
    Py_VISIT(self->root);
    Py_VISIT(self->thread);
    Py_VISIT(self->status);
    Py_VISIT(self->args);
    Py_VISIT(self->result);
    Py_VISIT(self->exc);
    Py_VISIT(self->exc_state);
    Py_VISIT(self->caught);
    Py_VISIT(self->error);
    Py_VISIT(self->runs);
    Py_VISIT(self->task);
    Py_VISIT(self->ctx);
    Py_VISIT(self->outer_ctx);
    Py_VISIT(self->ext);
    return 0;
}

static int
record_clear(ft_record *self)
{
    Py_CLEAR(self->info);
    Py_CLEAR(self->parent);
    Py_CLEAR(self->root);
    Py_CLEAR(self->thread);
    Py_CLEAR(self->status);
    Py_CLEAR(self->args);
    Py_CLEAR(self->result);
    Py_CLEAR(self->exc);
    Py_CLEAR(self->exc_state);
    Py_CLEAR(self->caught);
    Py_CLEAR(self->error);
    Py_CLEAR(self->runs);
    Py_CLEAR(self->task);
    Py_CLEAR(self->ctx);
    Py_CLEAR(self->outer_ctx);
    Py_CLEAR(self->ext);
    return 0;
}

static void
record_dealloc(ft_record *self)
{
    PyObject_GC_UnTrack(self);
    /* a chain of parents (deep recursion) would free recursively: the trashcan defers the
       deeper ones so the C stack stays bounded, as CPython does for its own containers */
    Py_TRASHCAN_BEGIN(self, record_dealloc)
    (void)record_clear(self);
    PyObject_GC_Del(self);
    Py_TRASHCAN_END
}

/* The AttributeError an unset slot raises in records.Record (after `del rec.name`). */
static int
require(PyObject *field, const char *name)
{
    if (field == NULL) {
        PyErr_Format(PyExc_AttributeError,
                     "'flowtrace_otel._native.Record' object has no attribute '%s'", name);
        return -1;
    }
    return 0;
}

/* records.Record.run_slices: (start, end) of each run, [(start, end or start)] if no runs. */
static PyObject *
record_run_slices(ft_record *self, PyObject *Py_UNUSED(ignored))
{
    if (require(self->runs, "runs") < 0) {
        return NULL;
    }
    PyObject *runs = Py_NewRef(self->runs);  /* owned: the field may change below */
    PyObject *start = PyLong_FromLongLong(self->start);  /* owned */
    PyObject *end = PyLong_FromLongLong(self->end ? self->end : self->start);  /* owned */
    PyObject *points = NULL;  /* owned: [start, *runs, (end)] */
    PyObject *slices = NULL;  /* owned, returned */
    if (start == NULL || end == NULL) {
        goto done;
    }
    int any = PyObject_IsTrue(runs);
    if (any < 0) {
        goto done;
    }
    if (!any) {
        slices = Py_BuildValue("[(OO)]", start, end);
        goto done;
    }
    points = PySequence_List(runs);  /* a copy: nothing below sees later changes */
    if (points == NULL || PyList_Insert(points, 0, start) < 0) {
        goto done;
    }
    Py_ssize_t n = PyList_GET_SIZE(points);
    if ((n - 1) % 2 == 0) {  /* an even number of marks: running when it ended */
        PyObject *last = PyList_GET_ITEM(points, n - 1);  /* borrowed from points */
        /* max(end, last): the first of equals, as builtins.max */
        int later = PyObject_RichCompareBool(last, end, Py_GT);
        if (later < 0 || PyList_Append(points, later ? last : end) < 0) {
            goto done;
        }
        n++;
    }
    /* Invariant: n is even here (1 + odd marks, or 1 + even marks + 1), as zip(strict) needs */
    slices = PyList_New(n / 2);
    if (slices == NULL) {
        goto done;
    }
    for (Py_ssize_t i = 0; i < n / 2; i++) {
        PyObject *pair = PyTuple_Pack(2, PyList_GET_ITEM(points, 2 * i),
                                      PyList_GET_ITEM(points, 2 * i + 1));  /* owned */
        if (pair == NULL) {
            Py_CLEAR(slices);
            goto done;
        }
        PyList_SET_ITEM(slices, i, pair);  /* steals pair */
    }
done:
    Py_XDECREF(points);
    Py_XDECREF(end);
    Py_XDECREF(start);
    Py_DECREF(runs);
    return slices;
}

/* records.Record.detached: ctx is not outer_ctx. */
static PyObject *
record_detached(ft_record *self, void *Py_UNUSED(closure))
{
    if (require(self->ctx, "ctx") < 0 || require(self->outer_ctx, "outer_ctx") < 0) {
        return NULL;
    }
    return PyBool_FromLong(self->ctx != self->outer_ctx);
}

/* records.Record.__repr__: <Record 3 fn returned>, no values (they are the program's). */
static PyObject *
record_repr(ft_record *self)
{
    if (require(self->info, "info") < 0 || require(self->status, "status") < 0) {
        return NULL;
    }
    PyObject *name;  /* owned */
    if (self->info == Py_None) {
        name = PyUnicode_FromString("?");
    }
    else {
        /* our CodeInfo's slot: no user code runs */
        name = PyObject_GetAttrString(self->info, "qualname");
    }
    if (name == NULL) {
        return NULL;
    }
    int closed = PyObject_IsTrue(self->status);
    if (closed < 0) {
        Py_DECREF(name);
        return NULL;
    }
    PyObject *text;  /* owned, returned */
    if (closed) {
        text = PyUnicode_FromFormat("<Record %lld %S %S>", self->id, name, self->status);
    }
    else {
        text = PyUnicode_FromFormat("<Record %lld %S open>", self->id, name);
    }
    Py_DECREF(name);
    return text;
}

#define OBJECT_FIELD(name, doc) \
    {#name, Py_T_OBJECT_EX, offsetof(ft_record, name), 0, doc}
#define INT_FIELD(name, doc) \
    {#name, Py_T_LONGLONG, offsetof(ft_record, name), 0, doc}

/* exactly records.Record's public fields (tests/test_native_record.py compares the names) */
static PyMemberDef record_members[] = {
    OBJECT_FIELD(info, "The function called (records.CodeInfo)."),
    OBJECT_FIELD(parent, "The caller; None for a trace's root."),
    OBJECT_FIELD(root, "The outermost record of this trace (itself for a root)."),
    INT_FIELD(id, "Sequence number, unique per monitor; 0 for ghosts and stand-ins."),
    OBJECT_FIELD(thread, "The thread that started the call (records.ThreadState)."),
    INT_FIELD(start, "perf_counter_ns at the call's start."),
    INT_FIELD(end, "perf_counter_ns at its end; 0 while open."),
    OBJECT_FIELD(status, "How the call ended; None while open."),
    {"recording", Py_T_BOOL, offsetof(ft_record, recording), 0,
     "False in a trace nobody records."},
    OBJECT_FIELD(args, "(parameter, captured text, kind) per argument; None if not captured."),
    OBJECT_FIELD(result, "Captured text of the return value; None; False: declined."),
    OBJECT_FIELD(exc, "(type name, message, id) when an exception left the call."),
    OBJECT_FIELD(exc_state, "'propagated', or 'caught' once the caller handled it."),
    OBJECT_FIELD(caught, "(type name, message) of exceptions handled inside the call."),
    OBJECT_FIELD(error, "The exception object that left the call, only while on_end runs."),
    INT_FIELD(suspended, "Nanoseconds spent suspended."),
    INT_FIELD(resumes, "Times resumed."),
    OBJECT_FIELD(runs, "Suspension and resumption times, alternating (bounded)."),
    OBJECT_FIELD(task, "The asyncio task's name, for a task's first coroutine."),
    OBJECT_FIELD(ctx, "The context current at the call's start."),
    OBJECT_FIELD(outer_ctx, "The context expected at its start if no span opened between."),
    OBJECT_FIELD(ext, "Consumer-owned state; a core sets it to None."),
    {NULL, 0, 0, 0, NULL},
};

static PyMethodDef record_methods[] = {
    {"run_slices", (PyCFunction)record_run_slices, METH_NOARGS,
     "(start, end) of each time the call ran, in perf_counter_ns; one for a plain call."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef record_getset[] = {
    {"detached", (getter)record_detached, NULL,
     "True when a span was opened between the caller's start and this call's.", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject record_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowtrace_otel._native.Record",
    .tp_doc = "Record(**fields): one traced call, records.Record's public fields in C.",
    .tp_basicsize = sizeof(ft_record),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_new = record_py_new,
    .tp_traverse = (traverseproc)record_traverse,
    .tp_clear = (inquiry)record_clear,
    .tp_dealloc = (destructor)record_dealloc,
    .tp_repr = (reprfunc)record_repr,
    .tp_members = record_members,
    .tp_methods = record_methods,
    .tp_getset = record_getset,
};

/* _bench_records(n, info, parent, thread, ctx): bench/record_cost.py's simulated call, n
 * times, on ft_record_new: what the C monitor will pay per record (no Python in the loop).
 * Every record is a child (root = parent): freed by reference counting, as in the bench. */
static PyObject *
record_bench(PyObject *Py_UNUSED(module), PyObject *args)
{
    Py_ssize_t n;
    PyObject *info, *parent, *thread, *ctx;  /* borrowed from args */
    if (!PyArg_ParseTuple(args, "nOOOO:_bench_records", &n, &info, &parent, &thread, &ctx)) {
        return NULL;
    }
    PyObject *returned = PyUnicode_InternFromString("returned");  /* owned */
    PyObject *text = PyUnicode_InternFromString("x");  /* owned */
    if (returned == NULL || text == NULL) {
        Py_XDECREF(returned);
        Py_XDECREF(text);
        return NULL;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        ft_record *rec = ft_record_new(info, parent, parent, thread, i + 1, ctx, ctx, 1);
        if (rec == NULL) {  /* owned from here */
            Py_DECREF(returned);
            Py_DECREF(text);
            return NULL;
        }
        rec->start = 1;
        if (rec->id) {
            rec->end = 2;
            Py_SETREF(rec->status, Py_NewRef(returned));
            if (rec->recording && rec->result == Py_None) {
                Py_SETREF(rec->result, Py_NewRef(text));
            }
        }
        Py_DECREF(rec);
    }
    Py_DECREF(returned);
    Py_DECREF(text);
    Py_RETURN_NONE;
}

static PyMethodDef record_functions[] = {
    {"_bench_records", record_bench, METH_VARARGS,
     "_bench_records(n, info, parent, thread, ctx): n records built and ended in C."},
    {NULL, NULL, 0, NULL},
};

int
record_add_type(PyObject *module)
{
    if (PyType_Ready(&record_type) < 0) {
        return -1;
    }
    if (PyModule_AddFunctions(module, record_functions) < 0) {
        return -1;
    }
    /* PyModule_AddObjectRef does not steal: the static type keeps its own reference */
    return PyModule_AddObjectRef(module, "Record", (PyObject *)&record_type);
}
