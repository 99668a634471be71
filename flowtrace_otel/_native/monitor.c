/* The native core's hot path: PY_START and PY_RETURN of traced user code, in C.
 *
 * A HotPath is made by flowtrace_otel/native_monitor.py for one registration of a Monitor's
 * callbacks.  It holds what monitoring.py's _make_callbacks closes over (the same objects) and
 * the Python callbacks themselves, to which it hands everything but the common path:
 *
 *   PY_START, in C: a code object decided before (its per-code slot is of this HotPath's
 *   generation), not `special` (hooks, coroutines), on a thread bound to this HotPath, with a
 *   parent: a call of an unrecorded trace pushes the function's ghost; a recorded call gets a
 *   records.Record with every field set, its arguments captured (read with PyFrame_GetVar, no
 *   f_locals built), the consumer's wants_values and ctx_get asked exactly as in Python.
 *   Everything else (a code object not decided yet, a root that needs on_root, a thread seen
 *   for the first time by this HotPath, a ghost with an empty stack) calls the Python
 *   py_start, which does the whole event: nothing was changed before the hand-over.
 *
 *   PY_RETURN, in C: the top of this thread's stack is a record of the returning code with no
 *   parked generators (`_kids` None): pop it; a ghost ends there; a record gets its end time,
 *   status and captured result, and goes to every consumer's on_end.  Anything else calls the
 *   Python py_return (not user code, a hook, a call begun before tracing, generator sweeps).
 *
 * The records are the Python core's own records.Record instances (allocated as object.__new__
 * does, every slot stored through its member descriptor's offset), so the Python callbacks of
 * the other events and every consumer read them unchanged.
 *
 * Rules:
 *  - No user code is called: the only Python callables called are the tracer's own (the
 *    fallback callbacks, the consumers' on_end/wants_values/ctx_get, the capturer, the
 *    thread_state() and contain() helpers).  Reading a slot by offset, PyList_Append, an int's
 *    value and PyFrame_GetVar run no Python code.
 *  - An error raised in C or by our Python helpers goes to contain(error) (Python): the
 *    program's own exception (a signal handler's KeyboardInterrupt...) comes back and is
 *    raised into the program, exactly as the Python callbacks do (interrupts.py); an internal
 *    error is contained there (logged once, tracing stopped) and the event returns None.
 *  - The per-code slot holds BORROWED pointers to the CodeInfo (and its ghost and params):
 *    they are valid while this HotPath lives, because it holds the monitor's `infos` dict,
 *    which keeps every non-typed code's entry for the monitor's lifetime.  A slot of another
 *    generation is never dereferenced beyond its generation field.  Typed/exec'd code (file
 *    name "<...>"), whose entries the monitor may evict, never gets a slot: it always takes
 *    the Python path at PY_START.
 */
#include "monitor.h"

#include "clock.h"
#include "threadstack.h"

/* --- per-code decisions (a co_extra index of our own, separate from codeslot.c's) --------- */

typedef struct {
    uint64_t generation;   /* the HotPath generation that decided; 0 never matches */
    int wanted;            /* 0: not user code (DISABLE) */
    int special;           /* CodeInfo.special: a hook or a coroutine, always Python */
    PyObject *info;        /* BORROWED (see above): records.CodeInfo, NULL if not wanted */
    PyObject *ghost;       /* BORROWED: info.ghost */
    PyObject *params;      /* BORROWED: info.params, a tuple of (name, kind, secret) */
} hot_slot;

static Py_ssize_t hot_extra_index = -1;
static uint64_t last_generation = 0;
/* Interned strings, made once per process and never released (interned strings are immortal
   on 3.12+: per-object copies would only be "lost" at exit). */
static PyObject *str_returned = NULL;  /* "returned" */
static PyObject *str_redacted = NULL;  /* "[REDACTED]" */
static PyObject *str_state = NULL;     /* "state" */

static void
hot_slot_free(void *extra)
{
    PyMem_RawFree(extra);  /* borrowed pointers only: nothing to release */
}

/* A zeroed slot attached to `code`, or NULL (nothing set: it is only a cache).  Its own
   function, never inlined: the memory check recognises the blocks CPython owns by it. */
#if defined(__GNUC__)
__attribute__((noinline))
#endif
static hot_slot *
hot_slot_attach(PyObject *code)
{
    hot_slot *slot = (hot_slot *)PyMem_RawCalloc(1, sizeof(hot_slot));
    if (slot == NULL) {
        return NULL;
    }
    if (PyUnstable_Code_SetExtra(code, hot_extra_index, slot) < 0) {
        PyMem_RawFree(slot);
        PyErr_Clear();
        return NULL;
    }
    /* the code object owns the slot from here: hot_slot_free runs at its death */
    return slot;
}

/* --- the HotPath object --------------------------------------------------------------------- */

enum {
    R_INFO, R_PARENT, R_ROOT, R_ID, R_THREAD, R_START, R_END, R_SUSPENDED, R_RESUMES, R_MARK,
    R_ARGS, R_RESULT, R_EXC, R_EXC_STATE, R_CAUGHT, R_ERROR, R_RUNS, R_TASK, R_EXT, R_STATUS,
    R_KIDS, R_LAST_RAISED, R_OWNER, R_CTX, R_OUTER_CTX, R_RECORDING, R_COUNT
};
static const char *record_fields[R_COUNT] = {
    "info", "parent", "root", "id", "thread", "start", "end", "suspended", "resumes", "_mark",
    "args", "result", "exc", "exc_state", "caught", "error", "runs", "task", "ext", "status",
    "_kids", "_last_raised", "_owner", "ctx", "outer_ctx", "recording",
};
enum { I_CODE, I_GHOST, I_PARAMS, I_SPECIAL, I_COUNT };
static const char *info_fields[I_COUNT] = {"code", "ghost", "params", "special"};
enum { S_STACK, S_BASE, S_BASE_CTX, S_COUNT };
static const char *state_fields[S_COUNT] = {"stack", "base", "base_ctx"};

typedef struct {
    PyObject_HEAD
    uint64_t generation;       /* unique per HotPath in this process */
    int active;                /* 1 until close() */
    int capture_args;
    int capture_result;
    /* what took which path (tests and diagnostics: stats()) */
    uint64_t c_starts, c_ghosts, c_returns, py_starts, py_returns;
    /* strong references, all set by the constructor (None where monitoring.py has None) */
    PyObject *py_start;        /* the Python callbacks: the reference, and our fallback */
    PyObject *py_return;
    PyObject *tls;             /* Monitor.tls (threading.local) */
    PyObject *thread_state;    /* Monitor.thread_state */
    PyObject *infos;           /* Monitor.infos: {id(code): (code, CodeInfo | None)} */
    PyObject *ids;             /* Monitor._ids: an iterator of record ids */
    PyObject *ctx_get;         /* or None */
    PyObject *capture;         /* capturer.call */
    PyObject *on_ends;         /* tuple of the consumers' on_end */
    PyObject *wants_values;    /* or None */
    PyObject *contain;         /* Monitor: error -> the program's exception to raise, or None */
    PyObject *disable;         /* sys.monitoring.DISABLE */
    PyTypeObject *record_type; /* records.Record */
    /* byte offsets of the slots, read from the classes' member descriptors */
    Py_ssize_t rec_off[R_COUNT];
    Py_ssize_t info_off[I_COUNT];
    Py_ssize_t state_off[S_COUNT];
} hot_path;

#define SLOT(obj, off) (*(PyObject **)((char *)(obj) + (off)))

/* The offset of slot `name` of class `cls`: its member descriptor must be an object slot. */
static int
slot_offset(PyObject *cls, const char *name, Py_ssize_t *offset)
{
    PyObject *descr = PyObject_GetAttrString(cls, name);  /* owned */
    if (descr == NULL) {
        return -1;
    }
    int ok = Py_IS_TYPE(descr, &PyMemberDescr_Type) &&
             ((PyMemberDescrObject *)descr)->d_member->type == Py_T_OBJECT_EX;
    if (ok) {
        *offset = ((PyMemberDescrObject *)descr)->d_member->offset;
    }
    Py_DECREF(descr);
    if (!ok) {
        PyErr_Format(PyExc_TypeError, "HotPath: %R.%s is not a __slots__ field", cls, name);
        return -1;
    }
    return 0;
}

static int
offsets(PyObject *cls, const char **names, int count, Py_ssize_t *out)
{
    for (int i = 0; i < count; i++) {
        if (slot_offset(cls, names[i], &out[i]) < 0) {
            return -1;
        }
    }
    return 0;
}

static PyTypeObject hot_path_type;

static PyObject *
hot_path_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {
        "py_start", "py_return", "tls", "thread_state", "infos", "ids", "ctx_get", "capture",
        "on_ends", "wants_values", "contain", "disable", "capture_args", "capture_result",
        "record_type", "info_type", "state_type", NULL};
    PyObject *py_start, *py_return, *tls, *thread_state, *infos, *ids, *ctx_get, *capture;
    PyObject *on_ends, *wants_values, *contain, *disable, *record_type, *info_type;
    PyObject *state_type;  /* all borrowed from the arguments */
    int capture_args, capture_result;
    if (!PyArg_ParseTupleAndKeywords(
            args, kwargs, "$OOOOO!OOOO!OOOppO!O!O!:HotPath", keywords, &py_start, &py_return,
            &tls, &thread_state, &PyDict_Type, &infos, &ids, &ctx_get, &capture, &PyTuple_Type,
            &on_ends, &wants_values, &contain, &disable, &capture_args, &capture_result,
            &PyType_Type, &record_type, &PyType_Type, &info_type, &PyType_Type, &state_type)) {
        return NULL;
    }
    if (!PyIter_Check(ids)) {
        PyErr_SetString(PyExc_TypeError, "HotPath: ids must be an iterator");
        return NULL;
    }
    if (threadstack_init() < 0) {
        return NULL;
    }
    if (str_returned == NULL) {
        str_returned = PyUnicode_InternFromString("returned");
        str_redacted = PyUnicode_InternFromString("[REDACTED]");
        str_state = PyUnicode_InternFromString("state");
        if (str_returned == NULL || str_redacted == NULL || str_state == NULL) {
            Py_CLEAR(str_returned);
            Py_CLEAR(str_redacted);
            Py_CLEAR(str_state);
            return NULL;
        }
    }
    if (hot_extra_index < 0) {
        hot_extra_index = PyUnstable_Eval_RequestCodeExtraIndex(hot_slot_free);
        if (hot_extra_index < 0) {
            if (!PyErr_Occurred()) {
                PyErr_SetString(PyExc_RuntimeError,
                                "flowtrace_otel._native: no free code-extra index left");
            }
            return NULL;
        }
    }
    hot_path *self = (hot_path *)type->tp_alloc(type, 0);  /* owned, returned */
    if (self == NULL) {
        return NULL;
    }
    /* Invariant: from here every object field is set (tp_alloc zeroed them), so dealloc and
       traverse see either NULL or a strong reference. */
    self->py_start = Py_NewRef(py_start);
    self->py_return = Py_NewRef(py_return);
    self->tls = Py_NewRef(tls);
    self->thread_state = Py_NewRef(thread_state);
    self->infos = Py_NewRef(infos);
    self->ids = Py_NewRef(ids);
    self->ctx_get = Py_NewRef(ctx_get);
    self->capture = Py_NewRef(capture);
    self->on_ends = Py_NewRef(on_ends);
    self->wants_values = Py_NewRef(wants_values);
    self->contain = Py_NewRef(contain);
    self->disable = Py_NewRef(disable);
    self->record_type = (PyTypeObject *)Py_NewRef(record_type);
    self->capture_args = capture_args;
    self->capture_result = capture_result;
    if (offsets(record_type, record_fields, R_COUNT, self->rec_off) < 0 ||
        offsets(info_type, info_fields, I_COUNT, self->info_off) < 0 ||
        offsets(state_type, state_fields, S_COUNT, self->state_off) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->generation = ++last_generation;  /* every earlier slot is now stale for us */
    self->active = 1;
    return (PyObject *)self;
}

static int
hot_path_traverse(hot_path *self, visitproc visit, void *arg)
{
    Py_VISIT(self->py_start);
    Py_VISIT(self->py_return);
    Py_VISIT(self->tls);
    Py_VISIT(self->thread_state);
    Py_VISIT(self->infos);
    Py_VISIT(self->ids);
    Py_VISIT(self->ctx_get);
    Py_VISIT(self->capture);
    Py_VISIT(self->on_ends);
    Py_VISIT(self->wants_values);
    Py_VISIT(self->contain);
    Py_VISIT(self->disable);
    Py_VISIT(self->record_type);
    return 0;
}

static int
hot_path_clear(hot_path *self)
{
    self->active = 0;
    Py_CLEAR(self->py_start);
    Py_CLEAR(self->py_return);
    Py_CLEAR(self->tls);
    Py_CLEAR(self->thread_state);
    Py_CLEAR(self->infos);
    Py_CLEAR(self->ids);
    Py_CLEAR(self->ctx_get);
    Py_CLEAR(self->capture);
    Py_CLEAR(self->on_ends);
    Py_CLEAR(self->wants_values);
    Py_CLEAR(self->contain);
    Py_CLEAR(self->disable);
    Py_CLEAR(self->record_type);
    return 0;
}

static void
hot_path_dealloc(hot_path *self)
{
    PyObject_GC_UnTrack(self);
    threadstack_unbind(self->generation);  /* no thread keeps a state of a dead HotPath */
    (void)hot_path_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

/* --- errors ---------------------------------------------------------------------------------- */

/* An exception is set: let contain() judge it.  Returns NULL with the program's exception set
   (to raise into the program) or None (contained; tracing stopped). */
static PyObject *
judged(hot_path *self)
{
    PyObject *error = PyErr_GetRaisedException();  /* owned */
    PyObject *contain = self->contain;
    if (contain == NULL) {  /* closed meanwhile (cannot be: we hold a reference in the call) */
        Py_XDECREF(error);
        Py_RETURN_NONE;
    }
    PyObject *mine = PyObject_CallOneArg(contain, error);  /* owned */
    Py_DECREF(error);
    if (mine == NULL) {
        return NULL;  /* FLOWTRACE_OTEL_DEBUG=raise: contain() re-raised it */
    }
    if (mine == Py_None) {
        return mine;
    }
    PyErr_SetRaisedException(mine);  /* steals the reference */
    return NULL;
}

/* --- helpers --------------------------------------------------------------------------------- */

static inline PyObject *
fallback(PyObject *callback, PyObject *const *args, Py_ssize_t nargs, uint64_t *count)
{
    (*count)++;
    /* The Python callback does the whole event and contains its own errors: whatever it
       raises is the program's (or FLOWTRACE_OTEL_DEBUG=raise), so it goes on unchanged. */
    return PyObject_Vectorcall(callback, args, (size_t)nargs, NULL);
}

/* Hand the whole event to the Python callback (counted). */
static PyObject *
python_start(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fallback(self->py_start, args, nargs, &self->py_starts);
}

static PyObject *
python_return(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    return fallback(self->py_return, args, nargs, &self->py_returns);
}

/* This thread's ThreadState and its stack for this HotPath: 1 bound, 0 not yet (the caller
   takes the Python path, which creates the state), -1 error. */
static int
bound_thread(hot_path *self, thread_stack **out)
{
    thread_stack *ts = threadstack_current();
    if (ts == NULL) {
        return -1;
    }
    *out = ts;
    if (ts->hot_generation == self->generation) {
        return 1;
    }
    /* tls.state: a threading.local attribute, read in C (no Python code runs) */
    PyObject *state = PyObject_GetAttr(self->tls, str_state);  /* owned */
    if (state == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_AttributeError)) {
            return -1;
        }
        PyErr_Clear();
        return 0;  /* the Python callback's thread_state() creates and registers it */
    }
    PyObject *stack = SLOT(state, self->state_off[S_STACK]);  /* borrowed */
    if (stack == NULL || !PyList_CheckExact(stack)) {
        Py_DECREF(state);
        PyErr_SetString(PyExc_TypeError, "HotPath: ThreadState.stack is not a list");
        return -1;
    }
    PyObject *old_state = ts->hot_state;
    PyObject *old_stack = ts->hot_stack;
    ts->hot_state = state;  /* the reference moves in */
    ts->hot_stack = Py_NewRef(stack);
    ts->hot_generation = self->generation;
    Py_XDECREF(old_stack);
    Py_XDECREF(old_state);
    return 1;
}

/* Remember the decision the Python callback just made for `code` (if cacheable). */
static void
remember(hot_path *self, PyObject *code)
{
    PyObject *filename = ((PyCodeObject *)code)->co_filename;  /* borrowed */
    if (PyUnicode_Check(filename) && PyUnicode_GET_LENGTH(filename) > 0 &&
        PyUnicode_READ_CHAR(filename, 0) == '<') {
        return;  /* typed or exec'd code: its cache entry may be evicted (see the top) */
    }
    PyObject *key = PyLong_FromVoidPtr(code);  /* owned */
    if (key == NULL) {
        PyErr_Clear();
        return;
    }
    PyObject *entry = PyDict_GetItemWithError(self->infos, key);  /* borrowed */
    Py_DECREF(key);
    if (entry == NULL || !PyTuple_CheckExact(entry) || PyTuple_GET_SIZE(entry) != 2 ||
        PyTuple_GET_ITEM(entry, 0) != code) {
        PyErr_Clear();
        return;  /* not decided (a hook's start may not learn), or not this code object */
    }
    PyObject *info = PyTuple_GET_ITEM(entry, 1);  /* borrowed: kept by `infos` */
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, hot_extra_index, &extra) < 0) {
        PyErr_Clear();
        return;
    }
    hot_slot *slot = (hot_slot *)extra;
    if (slot == NULL && (slot = hot_slot_attach(code)) == NULL) {
        return;  /* only a cache: the Python path goes on deciding */
    }
    if (info == Py_None) {
        slot->wanted = 0;
        slot->special = 0;
        slot->info = slot->ghost = slot->params = NULL;
    }
    else {
        PyObject *ghost = SLOT(info, self->info_off[I_GHOST]);
        PyObject *params = SLOT(info, self->info_off[I_PARAMS]);
        PyObject *special = SLOT(info, self->info_off[I_SPECIAL]);
        if (ghost == NULL || params == NULL || !PyTuple_CheckExact(params) || special == NULL) {
            slot->generation = 0;
            return;
        }
        slot->wanted = 1;
        slot->special = special != Py_False;  /* `info.special`: a bool (or a hook's True) */
        slot->info = info;
        slot->ghost = ghost;  /* kept by info, kept by infos */
        slot->params = params;
    }
    slot->generation = self->generation;
}

/* Untrack a tuple none of whose items is tracked by the GC (what the GC does on its first
   pass over it, `_PyTuple_MaybeUntrack`): it cannot be part of a cycle. */
static void
untrack_if_flat(PyObject *tuple)
{
    if (!PyObject_GC_IsTracked(tuple)) {
        return;
    }
    for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(tuple); i++) {
        PyObject *item = PyTuple_GET_ITEM(tuple, i);
        if (PyObject_IS_GC(item) && PyObject_GC_IsTracked(item)) {
            return;
        }
    }
    PyObject_GC_UnTrack(tuple);
}

/* The captured arguments of the frame that starts: a tuple of (name, text, kind).
   NULL with an exception on error. */
static PyObject *
captured_args(hot_path *self, PyObject *params)
{
    PyFrameObject *frame = PyEval_GetFrame();  /* borrowed: the monitored frame (no frame of
                                                  ours is on the stack in a C callback) */
    if (frame == NULL) {
        PyErr_SetString(PyExc_RuntimeError, "HotPath: no frame at PY_START");
        return NULL;
    }
    Py_ssize_t n = PyTuple_GET_SIZE(params);
    PyObject *out = PyTuple_New(n);  /* owned */
    if (out == NULL) {
        return NULL;
    }
    Py_ssize_t count = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        PyObject *param = PyTuple_GET_ITEM(params, i);  /* (name, kind, secret), borrowed */
        if (!PyTuple_CheckExact(param) || PyTuple_GET_SIZE(param) != 3) {
            PyErr_SetString(PyExc_TypeError, "HotPath: a parameter is not (name, kind, secret)");
            Py_DECREF(out);
            return NULL;
        }
        PyObject *name = PyTuple_GET_ITEM(param, 0);
        PyObject *kind = PyTuple_GET_ITEM(param, 1);
        PyObject *item;  /* owned */
        if (PyTuple_GET_ITEM(param, 2) == Py_True) {
            item = PyTuple_Pack(3, name, str_redacted, kind);
        }
        else {
            /* the local's value (a cell's content), as `f_locals[name]`, without f_locals */
            PyObject *value = PyFrame_GetVar(frame, name);  /* owned */
            if (value == NULL) {
                if (PyErr_ExceptionMatches(PyExc_NameError)) {
                    PyErr_Clear();  /* unbound: `name in f_locals` is False, skipped */
                    continue;
                }
                Py_DECREF(out);
                return NULL;
            }
            PyObject *text = PyObject_CallOneArg(self->capture, value);  /* owned */
            Py_DECREF(value);
            if (text == NULL) {
                Py_DECREF(out);
                return NULL;
            }
            item = PyTuple_Pack(3, name, text, kind);
            Py_DECREF(text);
        }
        if (item == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        /* Three exact strs (the capturer's text is an exact str): no cycle can go through
           it, so it leaves the GC's lists now, as the GC itself would untrack it on its first
           pass (a kept record's values would otherwise be traversed by every collection). */
        if (PyUnicode_CheckExact(PyTuple_GET_ITEM(item, 1))) {
            PyObject_GC_UnTrack(item);
        }
        PyTuple_SET_ITEM(out, count, item);  /* steals item */
        count++;
    }
    if (count < n) {
        PyObject *shorter = PyTuple_GetSlice(out, 0, count);  /* owned */
        Py_DECREF(out);
        out = shorter;
        if (out == NULL) {
            return NULL;
        }
    }
    untrack_if_flat(out);
    return out;
}

/* A new records.Record as py_start builds one: every slot set.  Borrowed arguments, except
   `id`, `args` and `result`, whose references move in.  NULL with an exception on error
   (the moved references are released then too). */
static PyObject *
new_record(hot_path *self, PyObject *info, PyObject *parent, PyObject *root, PyObject *id,
           PyObject *state, PyObject *ctx, PyObject *outer_ctx, PyObject *args,
           PyObject *result, int recording)
{
    PyTypeObject *type = self->record_type;
    PyObject *rec = type->tp_alloc(type, 0);  /* owned; what object.__new__(Record) does */
    if (rec == NULL) {
        Py_DECREF(id);
        Py_DECREF(args);
        Py_DECREF(result);
        return NULL;
    }
    const Py_ssize_t *off = self->rec_off;
    PyObject *zero = PyLong_FromLong(0);  /* the small int: cannot fail, immortal */
    /* tp_alloc zeroed every slot: plain stores, each taking its own reference */
    SLOT(rec, off[R_INFO]) = Py_NewRef(info);
    SLOT(rec, off[R_PARENT]) = Py_NewRef(parent);
    SLOT(rec, off[R_ROOT]) = Py_NewRef(root);
    SLOT(rec, off[R_ID]) = id;
    SLOT(rec, off[R_THREAD]) = Py_NewRef(state);
    SLOT(rec, off[R_START]) = Py_NewRef(zero);
    SLOT(rec, off[R_END]) = Py_NewRef(zero);
    SLOT(rec, off[R_SUSPENDED]) = Py_NewRef(zero);
    SLOT(rec, off[R_RESUMES]) = Py_NewRef(zero);
    SLOT(rec, off[R_MARK]) = Py_NewRef(zero);
    SLOT(rec, off[R_ARGS]) = args;
    SLOT(rec, off[R_RESULT]) = result;
    SLOT(rec, off[R_EXC]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_EXC_STATE]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_CAUGHT]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_ERROR]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_RUNS]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_TASK]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_EXT]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_STATUS]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_KIDS]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_LAST_RAISED]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_OWNER]) = Py_NewRef(Py_None);
    SLOT(rec, off[R_CTX]) = Py_NewRef(ctx);
    SLOT(rec, off[R_OUTER_CTX]) = Py_NewRef(outer_ctx);
    SLOT(rec, off[R_RECORDING]) = Py_NewRef(recording ? Py_True : Py_False);
    Py_DECREF(zero);
    return rec;
}

/* Store `value` (a new reference, moved in) in slot `off` of `obj`, releasing the old one. */
static inline void
set_slot(PyObject *obj, Py_ssize_t off, PyObject *value)
{
    PyObject *old = SLOT(obj, off);
    SLOT(obj, off) = value;
    Py_XDECREF(old);
}

/* --- PY_START ------------------------------------------------------------------------------- */

static PyObject *
start_event(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->active || nargs != 2) {
        Py_RETURN_NONE;  /* closed: an event queued before the callbacks were removed */
    }
    PyObject *code = args[0];  /* borrowed for the call */
    if (!PyCode_Check(code)) {
        return python_start(self, args, nargs);
    }
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, hot_extra_index, &extra) < 0) {
        return judged(self);
    }
    hot_slot *slot = (hot_slot *)extra;
    if (slot == NULL || slot->generation != self->generation) {
        /* first start of this code object for this HotPath: Python decides (learn), then we
           remember its decision */
        PyObject *result = python_start(self, args, nargs);  /* owned */
        if (result != NULL && self->active) {
            remember(self, code);
        }
        return result;
    }
    if (!slot->wanted) {
        return Py_NewRef(self->disable);  /* never met again at this offset */
    }
    if (slot->special) {
        return python_start(self, args, nargs);  /* hooks, coroutines: Python's */
    }
    thread_stack *ts = NULL;
    int bound = bound_thread(self, &ts);
    if (bound < 0) {
        return judged(self);
    }
    if (bound == 0) {
        return python_start(self, args, nargs);  /* this thread's first event */
    }
    PyObject *state = ts->hot_state;  /* borrowed, kept by ts */
    PyObject *stack = ts->hot_stack;  /* borrowed, kept by ts */
    Py_ssize_t depth = PyList_GET_SIZE(stack);
    PyObject *top = depth ? PyList_GET_ITEM(stack, depth - 1) : NULL;  /* borrowed */
    PyObject *parent = top ? top : SLOT(state, self->state_off[S_BASE]);  /* borrowed */
    if (parent == NULL || parent == Py_None || !Py_IS_TYPE(parent, self->record_type)) {
        return python_start(self, args, nargs);  /* a root: the consumers' on_root */
    }
    const Py_ssize_t *off = self->rec_off;
    if (SLOT(parent, off[R_RECORDING]) != Py_True) {  /* nobody records this trace */
        if (top == NULL) {
            /* a handed-over thread's first call: Python asks ctx_get whether a context was
               attached since */
            return python_start(self, args, nargs);
        }
        if (PyList_Append(stack, slot->ghost) < 0) {
            return judged(self);
        }
        self->c_ghosts++;
        Py_RETURN_NONE;
    }
    /* A recorded call with a recorded parent.  From here on Python's order: ctx, values,
       the record, push, then the clock.  The slot is read now, before any Python call: a
       monitor started meanwhile on another thread may re-decide it for itself. */
    PyObject *info = slot->info;  /* borrowed (see the top) */
    PyObject *params = slot->params;  /* borrowed: kept by info, which we hold below */
    Py_INCREF(info);              /* our own Python calls below must not free these under us */
    Py_INCREF(parent);
    Py_INCREF(state);
    PyObject *ctx = (self->ctx_get == Py_None) ? Py_NewRef(Py_None)
                                                : PyObject_CallNoArgs(self->ctx_get);  /* owned */
    PyObject *call_args = Py_NewRef(Py_None);  /* owned */
    PyObject *result = Py_NewRef(Py_None);     /* owned */
    PyObject *id = NULL;                       /* owned */
    PyObject *rec = NULL;                      /* owned */
    if (ctx == NULL) {
        goto error;
    }
    int want = 1;
    if (self->wants_values != Py_None) {
        PyObject *answer = PyObject_CallFunctionObjArgs(self->wants_values, parent, info, NULL);
        if (answer == NULL) {
            goto error;
        }
        want = PyObject_IsTrue(answer);  /* our own consumer's bool */
        Py_DECREF(answer);
        if (want < 0) {
            goto error;
        }
        if (!want) {
            Py_SETREF(result, Py_NewRef(Py_False));  /* records.NO_VALUES */
        }
    }
    if (want && self->capture_args && PyTuple_GET_SIZE(params) > 0) {
        PyObject *captured = captured_args(self, params);
        if (captured == NULL) {
            goto error;
        }
        Py_SETREF(call_args, captured);
    }
    id = PyIter_Next(self->ids);
    if (id == NULL) {
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError, "HotPath: record ids exhausted");
        }
        goto error;
    }
    /* the stack may have changed in our Python calls above (on this thread only through
       them); read the caller's context again, as Python reads it here */
    depth = PyList_GET_SIZE(stack);
    PyObject *outer_ctx = depth ? SLOT(PyList_GET_ITEM(stack, depth - 1), off[R_CTX])
                                : SLOT(state, self->state_off[S_BASE_CTX]);
    PyObject *root = SLOT(parent, off[R_ROOT]);
    if (outer_ctx == NULL || root == NULL) {
        PyErr_SetString(PyExc_AttributeError, "HotPath: a record or thread state is unset");
        goto error;
    }
    rec = new_record(self, info, parent, root, id, state, ctx, outer_ctx, call_args, result, 1);
    id = call_args = result = NULL;  /* moved into the record (or released on failure) */
    if (rec == NULL) {
        goto error;
    }
    if (PyList_Append(stack, rec) < 0) {
        goto error;
    }
    PyObject *start = PyLong_FromLongLong(flowtrace_monotonic_ns());  /* owned */
    if (start == NULL) {
        goto error;
    }
    set_slot(rec, off[R_START], start);
    self->c_starts++;
    Py_DECREF(rec);
    Py_DECREF(ctx);
    Py_DECREF(state);
    Py_DECREF(parent);
    Py_DECREF(info);
    Py_RETURN_NONE;
error:
    Py_XDECREF(rec);
    Py_XDECREF(id);
    Py_XDECREF(call_args);
    Py_XDECREF(result);
    Py_XDECREF(ctx);
    Py_DECREF(state);
    Py_DECREF(parent);
    Py_DECREF(info);
    return judged(self);
}

/* --- PY_RETURN ------------------------------------------------------------------------------ */

static PyObject *
return_event(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    if (!self->active || nargs != 3) {
        Py_RETURN_NONE;
    }
    PyObject *code = args[0];     /* borrowed */
    PyObject *retval = args[2];   /* borrowed */
    thread_stack *ts = threadstack_current();
    if (ts == NULL) {
        return judged(self);
    }
    if (ts->hot_generation != self->generation) {
        return python_return(self, args, nargs);
    }
    PyObject *stack = ts->hot_stack;  /* borrowed, kept by ts */
    Py_ssize_t depth = PyList_GET_SIZE(stack);
    if (depth == 0) {
        return python_return(self, args, nargs);
    }
    const Py_ssize_t *off = self->rec_off;
    PyObject *top = PyList_GET_ITEM(stack, depth - 1);  /* borrowed */
    if (!Py_IS_TYPE(top, self->record_type)) {
        return python_return(self, args, nargs);
    }
    PyObject *info = SLOT(top, off[R_INFO]);
    if (info == NULL || info == Py_None || SLOT(info, self->info_off[I_CODE]) != code) {
        return python_return(self, args, nargs);  /* other_return: Python's */
    }
    PyObject *id = SLOT(top, off[R_ID]);
    if (id == NULL || !PyLong_CheckExact(id)) {
        return python_return(self, args, nargs);
    }
    int overflow = 0;
    long long rid = PyLong_AsLongLongAndOverflow(id, &overflow);
    if (rid == 0 && !overflow) {
        if (PyErr_Occurred()) {
            return judged(self);
        }
        /* a ghost (or a stand-in): pop it, nothing to end.  The list keeps its allocation,
           as list.pop() may; the popped reference is ours to release. */
        Py_SET_SIZE(stack, depth - 1);
        Py_DECREF(top);
        self->c_returns++;
        Py_RETURN_NONE;
    }
    PyObject *kids = SLOT(top, off[R_KIDS]);
    int no_kids = kids == Py_None ||
                  (kids != NULL && PyDict_CheckExact(kids) && PyDict_GET_SIZE(kids) == 0);
    if (!no_kids) {
        /* parked generators to sweep (`if rec._kids:` in Python; an emptied dict is false) */
        return python_return(self, args, nargs);
    }
    Py_SET_SIZE(stack, depth - 1);
    self->c_returns++;
    PyObject *rec = top;  /* owned: the list's reference moves to us */
    PyObject *end = PyLong_FromLongLong(flowtrace_monotonic_ns());  /* owned */
    if (end == NULL) {
        Py_DECREF(rec);
        return judged(self);
    }
    set_slot(rec, off[R_END], end);
    set_slot(rec, off[R_STATUS], Py_NewRef(str_returned));
    if (SLOT(rec, off[R_RECORDING]) == Py_True) {
        if (self->capture_result && SLOT(rec, off[R_RESULT]) == Py_None) {
            PyObject *text = PyObject_CallOneArg(self->capture, retval);  /* owned */
            if (text == NULL) {
                Py_DECREF(rec);
                return judged(self);
            }
            set_slot(rec, off[R_RESULT], text);
        }
        PyObject *on_ends = Py_NewRef(self->on_ends);  /* owned: close() may run inside */
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(on_ends); i++) {
            PyObject *done = PyObject_CallOneArg(PyTuple_GET_ITEM(on_ends, i), rec);
            if (done == NULL) {
                Py_DECREF(on_ends);
                Py_DECREF(rec);
                return judged(self);
            }
            Py_DECREF(done);
        }
        Py_DECREF(on_ends);
    }
    Py_DECREF(rec);
    Py_RETURN_NONE;
}

/* The callbacks hold a reference to their HotPath while they run: the Python they call may
   replace or remove the registered callbacks (stop(), new consumers), and sys.monitoring
   does not keep the bound method (and so us) alive during the call. */
static PyObject *
hot_py_start(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_INCREF(self);
    PyObject *result = start_event(self, args, nargs);
    Py_DECREF(self);
    return result;
}

static PyObject *
hot_py_return(hot_path *self, PyObject *const *args, Py_ssize_t nargs)
{
    Py_INCREF(self);
    PyObject *result = return_event(self, args, nargs);
    Py_DECREF(self);
    return result;
}

/* --- the rest of the type ------------------------------------------------------------------ */

static PyObject *
hot_close(hot_path *self, PyObject *Py_UNUSED(ignored))
{
    self->active = 0;
    threadstack_unbind(self->generation);  /* the thread states go with their monitor */
    Py_RETURN_NONE;
}

static PyObject *
hot_decided(hot_path *self, PyObject *code)
{
    if (!PyCode_Check(code)) {
        PyErr_SetString(PyExc_TypeError, "decided(code): a code object");
        return NULL;
    }
    void *extra = NULL;
    if (PyUnstable_Code_GetExtra(code, hot_extra_index, &extra) < 0) {
        return NULL;
    }
    hot_slot *slot = (hot_slot *)extra;
    if (slot == NULL || slot->generation != self->generation) {
        Py_RETURN_NONE;
    }
    return PyUnicode_FromString(!slot->wanted ? "ignored" : slot->special ? "special"
                                                                           : "traced");
}

static PyObject *
hot_stats(hot_path *self, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("{s:K,s:K,s:K,s:K,s:K}",
                         "c_starts", (unsigned long long)self->c_starts,
                         "c_ghosts", (unsigned long long)self->c_ghosts,
                         "c_returns", (unsigned long long)self->c_returns,
                         "py_starts", (unsigned long long)self->py_starts,
                         "py_returns", (unsigned long long)self->py_returns);
}

static PyObject *
hot_generation(hot_path *self, void *Py_UNUSED(closure))
{
    return PyLong_FromUnsignedLongLong(self->generation);
}

static PyMethodDef hot_path_methods[] = {
    {"py_start", (PyCFunction)(void (*)(void))hot_py_start, METH_FASTCALL,
     "PY_START callback: the common path in C, the rest through the Python callback."},
    {"py_return", (PyCFunction)(void (*)(void))hot_py_return, METH_FASTCALL,
     "PY_RETURN callback: the common path in C, the rest through the Python callback."},
    {"close", (PyCFunction)hot_close, METH_NOARGS,
     "close(): every later event returns None at once (the callbacks were removed)."},
    {"stats", (PyCFunction)hot_stats, METH_NOARGS,
     "stats(): how many events took the C path (c_starts, c_ghosts, c_returns) and how many "
     "the Python callbacks (py_starts, py_returns)."},
    {"decided", (PyCFunction)hot_decided, METH_O,
     "decided(code): 'traced', 'special', 'ignored' as remembered in C, or None (tests)."},
    {NULL, NULL, 0, NULL},
};

static PyGetSetDef hot_path_getset[] = {
    {"generation", (getter)hot_generation, NULL, "This HotPath's generation (tests).", NULL},
    {NULL, NULL, NULL, NULL, NULL},
};

static PyTypeObject hot_path_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowtrace_otel._native.HotPath",
    .tp_basicsize = sizeof(hot_path),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The native core's PY_START/PY_RETURN callbacks (see native_monitor.py).",
    .tp_new = hot_path_new,
    .tp_traverse = (traverseproc)hot_path_traverse,
    .tp_clear = (inquiry)hot_path_clear,
    .tp_dealloc = (destructor)hot_path_dealloc,
    .tp_methods = hot_path_methods,
    .tp_getset = hot_path_getset,
};

int
monitor_add_type(PyObject *module)
{
    if (PyType_Ready(&hot_path_type) < 0) {
        return -1;
    }
    return PyModule_AddObjectRef(module, "HotPath", (PyObject *)&hot_path_type);
}
