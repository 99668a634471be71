/* The C twin of flowtrace_otel/capture.py's Capturer: values to safe, bounded text.
 *
 * The Python Capturer is the reference; this file renders the same text, byte for byte, and
 * follows the same steps in the same order, so that it also reads the same parts of a value
 * and fails (an exception, which the Python caller turns into a placeholder) where the
 * reference fails.  Each function names the Python function it mirrors.
 *
 * Invariants (relied on below, each stated once):
 *  - No user code runs.  Values are classified by their EXACT type (Py_TYPE(v) == &PyX_Type),
 *    never by a subclass check that reads __class__; the builtin types' own C functions
 *    (their tp_repr, PyOS_double_to_string, PyLong_*, iteration) run no Python code for exact
 *    instances of these types, whose items are in turn classified the same way.  Anything
 *    else is a placeholder built from PyType_GetQualName (the type's own slot: what
 *    type.__getattribute__(kind, "__qualname__") returns, without a metaclass's
 *    __getattribute__), or, for functions, classes, modules and full_repr, is handed to
 *    `other`, our own Python function (capture.py's `_other_text`).
 *  - The only Python code called is ours: `is_secret` (redaction.py, on a dict key that is an
 *    exact str not yet in the shared cache) and `other`.  While it runs, another thread may
 *    run and mutate the containers we walk: every item taken out of a container is a strong
 *    reference before anything else runs, lists are re-measured at every step, and a dict or
 *    set that changes size raises RuntimeError, as the Python iterators do.
 *  - The text is written to a `writer` that keeps only the first max_repr characters but
 *    counts every character, so the lengths that steer the early stops (`room`) are exact.
 *    The caller's cut (capture.py `_cut`) only ever shows those first characters.
 *  - Recursion is bounded: containers nest at most MAX_DEPTH deep, then become
 *    "<list len=N>"; the ancestors being rendered are `seen[0..depth)`.
 *  - No exception is ever cleared: PyObject_Repr runs pending signal handlers first, so an
 *    error from a repr may be the program's own (a KeyboardInterrupt, a SIGALRM handler's
 *    exception).  A BaseException that is not an Exception goes on at once; an Exception goes
 *    to `failed` (capture.py `_failed`), which raises it again if a signal handler raised it,
 *    and otherwise makes it the reference's placeholder.
 *  - The GIL is held throughout (state.h).
 */
#include <stddef.h>
#include <string.h>

#include "capture.h"

#define MAX_DEPTH 3       /* capture.py _MAX_DEPTH */
#define INT_BITS 256      /* capture.py _INT_BITS: larger ints are "<int N bits>" */
#define SECRET_CACHE 4096 /* capture.py _SECRET_CACHE */
#define LOCAL_CHARS 256   /* characters kept on the C stack before the writer allocates */
#define ELLIPSIS_CHAR 0x2026  /* "…", the cut mark of capture.py _cut */

static const char REDACTED[] = "[REDACTED]";  /* redaction.py REDACTED */

typedef struct {
    PyObject_HEAD
    vectorcallfunc vectorcall;
    Py_ssize_t max_repr;   /* >= 4, as the Python Capturer clamps it */
    Py_ssize_t max_items;  /* >= 0 */
    int full_repr;
    PyObject *redact;      /* owned: a tuple of rules; empty means nothing is secret */
    PyObject *cache;       /* owned: dict, exact str -> bool, shared with the Python Capturer */
    PyObject *is_secret;   /* owned: is_secret(name, redact) -> bool (redaction.py) */
    PyObject *other;       /* owned: other(value, full_repr) -> str (capture.py) */
    PyObject *failed;      /* owned: failed(value, error) -> str, or raises (capture.py) */
    PyObject *name_key;    /* owned: the str "__name__" (a module's name in its dict) */
} capturer;

/* ---- the writer -------------------------------------------------------------------- */

typedef struct {
    Py_UCS4 *chars;     /* the first `stored` characters of the text: `local` or heap */
    Py_ssize_t stored;  /* <= keep */
    Py_ssize_t size;    /* allocated characters in `chars` */
    Py_ssize_t keep;    /* the most characters ever shown: max_repr */
    Py_ssize_t len;     /* the whole text's length, stored or not */
    Py_UCS4 local[LOCAL_CHARS];
} writer;

static void
writer_init(writer *w, Py_ssize_t keep)
{
    w->chars = w->local;
    w->stored = 0;
    w->size = LOCAL_CHARS;
    w->keep = keep;
    w->len = 0;
}

static void
writer_free(writer *w)
{
    if (w->chars != w->local) {
        PyMem_Free(w->chars);
    }
}

/* Room to store `n` more characters (as many of them as will be kept); -1 on no memory. */
static int
writer_reserve(writer *w, Py_ssize_t n)
{
    Py_ssize_t want = w->keep - w->stored < n ? w->keep : w->stored + n;
    if (want <= w->size) {
        return 0;
    }
    Py_ssize_t size = w->size * 2 > want ? w->size * 2 : want;
    if (size > w->keep) {
        size = w->keep;
    }
    Py_UCS4 *chars;
    if (w->chars == w->local) {
        chars = PyMem_New(Py_UCS4, size);
        if (chars != NULL) {
            memcpy(chars, w->local, (size_t)w->stored * sizeof(Py_UCS4));
        }
    }
    else {
        chars = w->chars;
        PyMem_Resize(chars, Py_UCS4, size);  /* NULL on failure, the old block kept */
    }
    if (chars == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    w->chars = chars;
    w->size = size;
    return 0;
}

/* Append `n` ASCII characters. */
static int
put_ascii(writer *w, const char *text, Py_ssize_t n)
{
    if (w->stored < w->keep) {
        if (writer_reserve(w, n) < 0) {
            return -1;
        }
        for (Py_ssize_t i = 0; i < n && w->stored < w->keep; i++) {
            w->chars[w->stored++] = (unsigned char)text[i];
        }
    }
    w->len += n;
    return 0;
}

static int
put_cstr(writer *w, const char *text)
{
    return put_ascii(w, text, (Py_ssize_t)strlen(text));
}

static int
put_char(writer *w, Py_UCS4 ch)
{
    if (w->stored < w->keep) {
        if (writer_reserve(w, 1) < 0) {
            return -1;
        }
        w->chars[w->stored++] = ch;
    }
    w->len++;
    return 0;
}

/* Append the characters of a str (an exact str or a subclass: its data, no method called). */
static int
put_str(writer *w, PyObject *text)
{
    Py_ssize_t n = PyUnicode_GET_LENGTH(text);
    if (w->stored < w->keep) {
        if (writer_reserve(w, n) < 0) {
            return -1;
        }
        int kind = PyUnicode_KIND(text);
        const void *data = PyUnicode_DATA(text);
        for (Py_ssize_t i = 0; i < n && w->stored < w->keep; i++) {
            w->chars[w->stored++] = PyUnicode_READ(kind, data, i);
        }
    }
    w->len += n;
    return 0;
}

/* Append `repr_result` (a new reference, or NULL with an exception) and release it. */
static int
put_owned_str(writer *w, PyObject *repr_result)
{
    if (repr_result == NULL) {
        return -1;
    }
    int rc = put_str(w, repr_result);
    Py_DECREF(repr_result);
    return rc;
}

/* The text as a str, cut to max_repr as capture.py `_cut` does. */
static PyObject *
writer_finish(writer *w, Py_ssize_t max_repr)
{
    if (w->len <= max_repr) {  /* then every character was stored (keep == max_repr) */
        return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, w->chars, w->stored);
    }
    /* text[: max_repr - 1] + "…"; max_repr >= 4, and max_repr characters are stored */
    w->chars[max_repr - 1] = ELLIPSIS_CHAR;
    return PyUnicode_FromKindAndData(PyUnicode_4BYTE_KIND, w->chars, max_repr);
}

/* ---- scalars ----------------------------------------------------------------------- */

/* repr(text[:n]) for an exact str: the ASCII case here, as unicode_repr writes it; any other
   str through unicode_repr itself (the exact str's own tp_repr: no user code). */
static int
put_str_repr(writer *w, PyObject *text, Py_ssize_t n)
{
    if (!PyUnicode_IS_ASCII(text)) {
        PyObject *cut = PyUnicode_Substring(text, 0, n);  /* owned */
        if (cut == NULL) {
            return -1;
        }
        int rc = put_owned_str(w, PyObject_Repr(cut));
        Py_DECREF(cut);
        return rc;
    }
    const Py_UCS1 *data = PyUnicode_1BYTE_DATA(text);
    int squote = 0, dquote = 0;
    for (Py_ssize_t i = 0; i < n; i++) {
        squote |= data[i] == '\'';
        dquote |= data[i] == '"';
    }
    /* unicode_repr: single quotes, unless the text has a ' and no " */
    char quote = (squote && !dquote) ? '"' : '\'';
    static const char hex[] = "0123456789abcdef";
    char buffer[64];
    Py_ssize_t used = 0;
    if (put_char(w, (Py_UCS4)quote) < 0) {
        return -1;
    }
    for (Py_ssize_t i = 0; i < n; i++) {
        if (used > (Py_ssize_t)sizeof(buffer) - 5) {  /* room for 4 + the closing quote */
            if (put_ascii(w, buffer, used) < 0) {
                return -1;
            }
            used = 0;
        }
        unsigned char ch = data[i];
        if (ch == (unsigned char)quote || ch == '\\') {
            buffer[used++] = '\\';
            buffer[used++] = (char)ch;
        }
        else if (ch == '\t') {
            buffer[used++] = '\\';
            buffer[used++] = 't';
        }
        else if (ch == '\n') {
            buffer[used++] = '\\';
            buffer[used++] = 'n';
        }
        else if (ch == '\r') {
            buffer[used++] = '\\';
            buffer[used++] = 'r';
        }
        else if (ch < ' ' || ch == 0x7f) {
            buffer[used++] = '\\';
            buffer[used++] = 'x';
            buffer[used++] = hex[ch >> 4];
            buffer[used++] = hex[ch & 15];
        }
        else {
            buffer[used++] = (char)ch;
        }
    }
    buffer[used++] = quote;
    return put_ascii(w, buffer, used);
}

/* The bit length of an exact int, or -1 with an exception. */
static Py_ssize_t
int_bits(PyObject *value, long long *small, int *fits)
{
    int overflow = 0;
    long long number = PyLong_AsLongLongAndOverflow(value, &overflow);
    if (number == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (!overflow) {
        *small = number;
        *fits = 1;
        return 0;  /* at most 64 bits: never more than INT_BITS, no need to count */
    }
    *fits = 0;
    PyObject *bits = PyObject_CallMethod(value, "bit_length", NULL);  /* int's own method */
    if (bits == NULL) {
        return -1;
    }
    Py_ssize_t count = PyLong_AsSsize_t(bits);
    Py_DECREF(bits);
    return count;  /* -1 with an exception if it failed */
}

/* The decimal digits of `number`, as repr(int) writes them, at the end of `buffer` (24 chars);
   returns where they start. */
static char *
decimal(long long number, char *end)
{
    /* the magnitude as unsigned: -LLONG_MIN does not fit a long long */
    unsigned long long magnitude = number < 0 ? 0ULL - (unsigned long long)number
                                              : (unsigned long long)number;
    char *start = end;
    do {
        *--start = (char)('0' + magnitude % 10);
        magnitude /= 10;
    } while (magnitude != 0);
    if (number < 0) {
        *--start = '-';
    }
    return start;
}

/* capture.py `_text` for an exact int: its repr, or "<int N bits>" past INT_BITS. */
static int
put_int(writer *w, PyObject *value)
{
    long long small = 0;
    int fits = 0;
    Py_ssize_t bits = int_bits(value, &small, &fits);
    if (bits < 0) {
        return -1;
    }
    char buffer[64];
    if (fits) {
        char *end = buffer + sizeof(buffer);
        char *start = decimal(small, end);  /* == repr(int) */
        return put_ascii(w, start, end - start);
    }
    if (bits > INT_BITS) {
        int n = PyOS_snprintf(buffer, sizeof(buffer), "<int %zd bits>", bits);
        return put_ascii(w, buffer, n);
    }
    return put_owned_str(w, PyObject_Repr(value));  /* <= 78 digits: under any digit limit */
}

/* repr() of an exact float, as float_repr writes it. */
static int
put_float(writer *w, PyObject *value)
{
    char *text = PyOS_double_to_string(PyFloat_AS_DOUBLE(value), 'r', 0, Py_DTSF_ADD_DOT_0,
                                       NULL);  /* owned, PyMem_Free */
    if (text == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    int rc = put_cstr(w, text);
    PyMem_Free(text);
    return rc;
}

/* True for the types of capture.py `_SCALARS`: shown by their builtin repr. */
static inline int
is_scalar(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    return value == Py_None || kind == &PyBool_Type || kind == &PyFloat_Type ||
           kind == &PyComplex_Type || kind == &PyRange_Type || value == Py_Ellipsis;
}

/* repr() of a `_SCALARS` value.  range's repr may raise (its bounds are ints of any size, and
   int -> str has a digit limit): the reference's repr raises the same. */
static int
put_scalar(writer *w, PyObject *value)
{
    if (value == Py_None) {
        return put_ascii(w, "None", 4);
    }
    if (value == Py_True) {
        return put_ascii(w, "True", 4);
    }
    if (value == Py_False) {
        return put_ascii(w, "False", 5);
    }
    if (Py_TYPE(value) == &PyFloat_Type) {
        return put_float(w, value);
    }
    return put_owned_str(w, PyObject_Repr(value));  /* complex, range, Ellipsis */
}

/* repr(value[:n]) for exact bytes or bytearray (their own tp_repr). */
static int
put_bytes_repr(writer *w, PyObject *value, Py_ssize_t n)
{
    PyObject *cut;  /* owned */
    if (Py_TYPE(value) == &PyBytes_Type) {
        if (PyBytes_GET_SIZE(value) <= n) {
            return put_owned_str(w, PyObject_Repr(value));
        }
        cut = PyBytes_FromStringAndSize(PyBytes_AS_STRING(value), n);
    }
    else {
        Py_ssize_t size = PyByteArray_GET_SIZE(value);
        cut = PyByteArray_FromStringAndSize(PyByteArray_AS_STRING(value), size < n ? size : n);
    }
    if (cut == NULL) {
        return -1;
    }
    int rc = put_owned_str(w, PyObject_Repr(cut));
    Py_DECREF(cut);
    return rc;
}

/* ---- redaction --------------------------------------------------------------------- */

/* capture.py `_secret`: 1 when `key` is an exact str that looks secret, 0 if not, -1 error. */
static int
is_secret_key(capturer *self, PyObject *key)
{
    if (!PyUnicode_CheckExact(key) || PyTuple_GET_SIZE(self->redact) == 0) {
        return 0;
    }
    /* The cache's keys are exact strs, as is `key`: the lookup compares strs only. */
    PyObject *known = PyDict_GetItemWithError(self->cache, key);  /* borrowed */
    if (known != NULL) {
        return known == Py_True;
    }
    if (PyErr_Occurred()) {
        return -1;
    }
    PyObject *answer = PyObject_CallFunctionObjArgs(self->is_secret, key, self->redact, NULL);
    if (answer == NULL) {
        return -1;
    }
    int secret = answer == Py_True;  /* is_secret returns a bool */
    int rc = 0;
    if (PyDict_GET_SIZE(self->cache) < SECRET_CACHE) {
        rc = PyDict_SetItem(self->cache, key, answer);
    }
    Py_DECREF(answer);
    return rc < 0 ? -1 : secret;
}

/* ---- containers -------------------------------------------------------------------- */

static int text(capturer *self, writer *w, PyObject *value, int depth, PyObject **seen,
                Py_ssize_t room);

static inline int
is_container_type(PyTypeObject *kind)
{
    return kind == &PyList_Type || kind == &PyTuple_Type || kind == &PySet_Type ||
           kind == &PyFrozenSet_Type || kind == &PyDict_Type;
}

static Py_ssize_t
container_len(PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyList_Type) {
        return PyList_GET_SIZE(value);
    }
    if (kind == &PyTuple_Type) {
        return PyTuple_GET_SIZE(value);
    }
    if (kind == &PyDict_Type) {
        return PyDict_GET_SIZE(value);
    }
    return PySet_GET_SIZE(value);
}

static const char *
container_name(PyTypeObject *kind)
{
    return kind == &PyList_Type ? "list" : kind == &PyTuple_Type ? "tuple" :
           kind == &PySet_Type ? "set" : kind == &PyFrozenSet_Type ? "frozenset" : "dict";
}

/* Walks the items of a list, tuple, set or frozenset, or the (key, value) pairs of a dict,
   in the order Python's own iteration gives.  Every item is a strong reference. */
typedef struct {
    PyObject *container;  /* borrowed: the caller holds it for the walk */
    PyObject *iterator;   /* owned, sets only */
    Py_ssize_t index;     /* lists, tuples: the next index; dicts: PyDict_Next's position */
    Py_ssize_t dict_size; /* dicts: the size when the walk began */
} walk;

static int
walk_begin(walk *it, PyObject *container)
{
    it->container = container;
    it->iterator = NULL;
    it->index = 0;
    it->dict_size = 0;
    PyTypeObject *kind = Py_TYPE(container);
    if (kind == &PySet_Type || kind == &PyFrozenSet_Type) {
        /* set's own iterator: raises RuntimeError if the set changes size meanwhile */
        it->iterator = PyObject_GetIter(container);
        return it->iterator == NULL ? -1 : 0;
    }
    if (kind == &PyDict_Type) {
        it->dict_size = PyDict_GET_SIZE(container);
    }
    return 0;
}

static void
walk_end(walk *it)
{
    Py_CLEAR(it->iterator);
}

/* The next item (and, for a dict, its value) as new references: 1, or 0 at the end, or -1
   with an exception. */
static int
walk_next(walk *it, PyObject **item, PyObject **dict_value)
{
    PyObject *c = it->container;
    PyTypeObject *kind = Py_TYPE(c);
    if (kind == &PyList_Type) {
        /* a list may shrink while our Python code runs: measured at every step, as list
           iterators do */
        if (it->index >= PyList_GET_SIZE(c)) {
            return 0;
        }
        *item = Py_NewRef(PyList_GET_ITEM(c, it->index));
        it->index++;
        return 1;
    }
    if (kind == &PyTuple_Type) {
        if (it->index >= PyTuple_GET_SIZE(c)) {
            return 0;
        }
        *item = Py_NewRef(PyTuple_GET_ITEM(c, it->index));
        it->index++;
        return 1;
    }
    if (kind == &PyDict_Type) {
        if (PyDict_GET_SIZE(c) != it->dict_size) {
            PyErr_SetString(PyExc_RuntimeError, "dictionary changed size during iteration");
            return -1;
        }
        PyObject *key, *value;  /* borrowed, taken at once */
        if (!PyDict_Next(c, &it->index, &key, &value)) {
            return 0;
        }
        *item = Py_NewRef(key);
        if (dict_value != NULL) {
            *dict_value = Py_NewRef(value);
        }
        return 1;
    }
    *item = PyIter_Next(it->iterator);
    if (*item == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    return 1;
}

/* capture.py `_flat`'s test of one item: 1 when its builtin repr is what `_text` shows. */
static int
flat_item(capturer *self, PyObject *item)
{
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyUnicode_Type) {
        return PyUnicode_GET_LENGTH(item) <= self->max_repr;
    }
    if (kind == &PyBytes_Type) {
        return PyBytes_GET_SIZE(item) <= self->max_repr;
    }
    if (kind == &PyLong_Type) {
        long long small;
        int fits;
        Py_ssize_t bits = int_bits(item, &small, &fits);
        return bits < 0 ? -1 : bits <= INT_BITS;
    }
    return is_scalar(item);
}

/* capture.py `_flat`: 1 when every item (and dict key) is a flat scalar and no key is secret;
   0 if not; -1 with an exception. */
static int
is_flat(capturer *self, PyObject *value)
{
    int is_dict = Py_TYPE(value) == &PyDict_Type;
    walk it;
    PyObject *item, *dict_value;
    int more, flat = 1;
    if (is_dict && PyTuple_GET_SIZE(self->redact) > 0) {
        /* any(map(self._secret, value)): the keys first, stopping at a secret one */
        if (walk_begin(&it, value) < 0) {
            return -1;
        }
        while (flat == 1 && (more = walk_next(&it, &item, NULL)) == 1) {
            int secret = is_secret_key(self, item);
            Py_DECREF(item);
            flat = secret < 0 ? -1 : !secret;
        }
        walk_end(&it);
        if (flat != 1 || more < 0) {
            return more < 0 ? -1 : flat;
        }
    }
    /* then every item (a dict's keys, then its values): none of this runs Python code */
    if (walk_begin(&it, value) < 0) {
        return -1;
    }
    while (flat == 1 && (more = walk_next(&it, &item, is_dict ? &dict_value : NULL)) == 1) {
        flat = flat_item(self, item);
        Py_DECREF(item);
        if (is_dict) {
            if (flat == 1) {
                flat = flat_item(self, dict_value);
            }
            Py_DECREF(dict_value);
        }
    }
    walk_end(&it);
    return more < 0 ? -1 : flat;
}

/* A flat item's builtin repr (flat_item said 1): what the container's repr writes for it. */
static int
put_flat_item(capturer *self, writer *w, PyObject *item)
{
    PyTypeObject *kind = Py_TYPE(item);
    if (kind == &PyUnicode_Type) {
        return put_str_repr(w, item, PyUnicode_GET_LENGTH(item));
    }
    if (kind == &PyBytes_Type) {
        return put_bytes_repr(w, item, PyBytes_GET_SIZE(item));
    }
    if (kind == &PyLong_Type) {
        return put_int(w, item);  /* <= INT_BITS: its repr */
    }
    return put_scalar(w, item);
}

/* repr(value) of a flat container, every item written (the reference's repr evaluates them
   all, so a range whose repr fails fails here too). */
static int
put_flat(capturer *self, writer *w, PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    Py_ssize_t n = container_len(value);
    const char *opening, *closing;
    if (kind == &PySet_Type || kind == &PyFrozenSet_Type) {
        if (n == 0) {
            return put_cstr(w, kind == &PySet_Type ? "set()" : "frozenset()");
        }
        opening = kind == &PySet_Type ? "{" : "frozenset({";
        closing = kind == &PySet_Type ? "}" : "})";
    }
    else if (kind == &PyList_Type) {
        opening = "[";
        closing = "]";
    }
    else if (kind == &PyTuple_Type) {
        opening = "(";
        closing = n == 1 ? ",)" : ")";
    }
    else {
        opening = "{";
        closing = "}";
    }
    int is_dict = kind == &PyDict_Type;
    if (put_cstr(w, opening) < 0) {
        return -1;
    }
    walk it;
    if (walk_begin(&it, value) < 0) {
        return -1;
    }
    PyObject *item, *dict_value;
    int more, rc = 0;
    for (Py_ssize_t count = 0;
         rc == 0 && (more = walk_next(&it, &item, is_dict ? &dict_value : NULL)) == 1;
         count++) {
        if (count > 0) {
            rc = put_ascii(w, ", ", 2);
        }
        if (rc == 0) {
            rc = put_flat_item(self, w, item);
        }
        Py_DECREF(item);
        if (is_dict) {
            if (rc == 0) {
                rc = put_ascii(w, ": ", 2);
            }
            if (rc == 0) {
                rc = put_flat_item(self, w, dict_value);
            }
            Py_DECREF(dict_value);
        }
    }
    walk_end(&it);
    if (rc < 0 || more < 0) {
        return -1;
    }
    return put_cstr(w, closing);
}

/* capture.py `_container`: at most max_items items, MAX_DEPTH deep; stops, unclosed, once the
   text is longer than `room` (what follows would be cut off). */
static int
container(capturer *self, writer *w, PyObject *value, int depth, PyObject **seen,
          Py_ssize_t room)
{
    PyTypeObject *kind = Py_TYPE(value);
    for (int i = 0; i < depth; i++) {
        if (seen[i] == value) {
            return put_ascii(w, "...", 3);  /* an ancestor: a self-reference */
        }
    }
    if (depth >= MAX_DEPTH) {
        char buffer[64];
        int n = PyOS_snprintf(buffer, sizeof(buffer), "<%s len=%zd>", container_name(kind),
                              container_len(value));
        return put_ascii(w, buffer, n);
    }
    if (container_len(value) <= self->max_items) {
        int flat = is_flat(self, value);
        if (flat < 0) {
            return -1;
        }
        if (flat) {
            return put_flat(self, w, value);
        }
    }
    const char *opening, *closing;
    if (kind == &PySet_Type || kind == &PyFrozenSet_Type) {
        if (container_len(value) == 0) {
            return put_cstr(w, kind == &PySet_Type ? "set()" : "frozenset()");
        }
        opening = kind == &PySet_Type ? "{" : "frozenset({";
        closing = kind == &PySet_Type ? "}" : "})";
    }
    else if (kind == &PyList_Type) {
        opening = "[";
        closing = "]";
    }
    else if (kind == &PyTuple_Type) {
        opening = "(";
        closing = PyTuple_GET_SIZE(value) == 1 ? ",)" : ")";
    }
    else {
        opening = "{";
        closing = "}";
    }
    int is_dict = kind == &PyDict_Type;
    seen[depth] = value;  /* depth < MAX_DEPTH: seen has room; popped by returning */
    if (put_cstr(w, opening) < 0) {
        return -1;
    }
    /* `length` is the reference's: the text so far, less the first separator */
    Py_ssize_t length = (Py_ssize_t)strlen(opening) - 2;
    walk it;
    if (walk_begin(&it, value) < 0) {
        return -1;
    }
    PyObject *item = NULL, *dict_value = NULL;
    int more, rc = 0, stopped = 0;
    for (Py_ssize_t count = 0;
         (more = walk_next(&it, &item, is_dict ? &dict_value : NULL)) == 1; count++) {
        if (length > room) {  /* longer than will be shown: the rest would be cut off */
            stopped = 1;
        }
        else if (count >= self->max_items) {
            char buffer[64];
            int n = PyOS_snprintf(buffer, sizeof(buffer), "...+%zd",
                                  container_len(value) - count);
            rc = count > 0 ? put_ascii(w, ", ", 2) : 0;
            if (rc == 0) {
                rc = put_ascii(w, buffer, n);
            }
            stopped = 1;  /* the reference does not count this part in `length` */
        }
        else {
            Py_ssize_t left = room - length - 2;
            rc = count > 0 ? put_ascii(w, ", ", 2) : 0;
            Py_ssize_t part_start = w->len;
            if (rc == 0) {
                rc = text(self, w, item, depth + 1, seen, left);
            }
            if (rc == 0 && is_dict && w->len - part_start <= left) {
                Py_ssize_t key_len = w->len - part_start;
                int secret = is_secret_key(self, item);
                rc = secret < 0 ? -1 : put_ascii(w, ": ", 2);
                if (rc == 0) {
                    rc = secret ? put_ascii(w, REDACTED, sizeof(REDACTED) - 1)
                                : text(self, w, dict_value, depth + 1, seen,
                                       left - key_len - 2);
                }
            }
            length += w->len - part_start + 2;
        }
        Py_DECREF(item);
        if (is_dict) {
            Py_DECREF(dict_value);
        }
        if (rc < 0 || stopped) {
            break;
        }
    }
    walk_end(&it);
    if (rc < 0 || more < 0) {
        return -1;
    }
    /* longer than `room` (an early stop always is): the unclosed prefix */
    return length > room ? 0 : put_cstr(w, closing);
}

/* ---- any value --------------------------------------------------------------------- */

/* The type's __qualname__, as type.__getattribute__(kind, "__qualname__") reads it: its own
   slot (ht_qualname, or the tail of tp_name), no metaclass attribute lookup. */
static int
put_type_name(writer *w, PyTypeObject *kind)
{
    PyObject *name = PyType_GetQualName(kind);  /* owned; a str (type_set_qualname checks) */
    if (name == NULL) {
        return -1;
    }
    int rc = 0;
    if (!PyUnicode_Check(name)) {
        PyErr_SetString(PyExc_TypeError, "capture: a type's __qualname__ is not a str");
        rc = -1;
    }
    else {
        rc = put_str(w, name);  /* a str subclass's characters: no method of it runs */
    }
    Py_DECREF(name);
    return rc;
}

/* capture.py placeholder(): "<" + the type's __qualname__ + ">". */
static int
put_placeholder(writer *w, PyObject *value)
{
    if (put_char(w, '<') < 0 || put_type_name(w, Py_TYPE(value)) < 0) {
        return -1;
    }
    return put_char(w, '>');
}

/* Append a C string that is UTF-8 (a builtin's ml_name), as PyUnicode_FromString reads it. */
static int
put_utf8(writer *w, const char *text)
{
    return put_owned_str(w, PyUnicode_FromString(text));
}

/* capture.py `_named`, for what C reads from the objects' own slots: a class, a function (or
   a method of one), a builtin function.  1 when written, 0 for the rest of `_named`'s kinds
   (the caller hands them to `other`), -1 with an exception. */
static int
put_named(writer *w, PyObject *value)
{
    if (PyType_Check(value)) {  /* issubclass(type(value), type), read from tp_flags */
        if (put_cstr(w, "<class ") < 0 || put_type_name(w, (PyTypeObject *)value) < 0) {
            return -1;
        }
        return put_char(w, '>') < 0 ? -1 : 1;
    }
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyMethod_Type) {
        value = PyMethod_GET_FUNCTION(value);  /* borrowed; the method holds it */
        kind = Py_TYPE(value);
    }
    if (kind == &PyFunction_Type) {
        PyObject *name = ((PyFunctionObject *)value)->func_qualname;  /* borrowed */
        if (name == NULL || !PyUnicode_Check(name)) {
            return 0;  /* never seen: the reference decides */
        }
        if (put_cstr(w, "<function ") < 0 || put_str(w, name) < 0) {
            return -1;
        }
        return put_char(w, '>') < 0 ? -1 : 1;
    }
    if (kind == &PyCFunction_Type) {
        /* __self__ is PyCFunction_GET_SELF, None when NULL; __name__ is ml_name */
        PyObject *owner = PyCFunction_GET_SELF(value);  /* borrowed */
        const char *name = ((PyCFunctionObject *)value)->m_ml->ml_name;
        if (put_cstr(w, "<function ") < 0) {
            return -1;
        }
        if (owner != NULL && owner != Py_None && Py_TYPE(owner) != &PyModule_Type) {
            /* a class method of a type (dict.fromkeys): the type's name; else its type's */
            PyTypeObject *named = PyType_Check(owner) ? (PyTypeObject *)owner : Py_TYPE(owner);
            if (put_type_name(w, named) < 0 || put_char(w, '.') < 0) {
                return -1;
            }
        }
        if (put_utf8(w, name) < 0) {
            return -1;
        }
        return put_char(w, '>') < 0 ? -1 : 1;
    }
    if (kind == &PyMethod_Type || kind == &PyFunction_Type || kind == &PyCFunction_Type) {
        return 0;
    }
    return put_placeholder(w, value) < 0 ? -1 : 1;  /* a method of another callable */
}

/* capture.py `_other_text`: a class, function or method by name, an exact module by its
   __name__, else (full_repr, or a module subclass) our Python function `other`, else a
   placeholder. */
static int
other_value(capturer *self, writer *w, PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    /* issubclass(kind, (FunctionType, BuiltinFunctionType, MethodType, type)): these types
       cannot be subclassed, but for type (metaclasses), which PyType_Check covers */
    if (PyType_Check(value) || kind == &PyFunction_Type || kind == &PyCFunction_Type ||
        kind == &PyMethod_Type) {
        int done = put_named(w, value);
        if (done != 0) {
            return done < 0 ? -1 : 0;
        }
    }
    else if (kind == &PyModule_Type) {
        /* the module's own dict (md_dict), and its "__name__" if that is an exact str */
        PyObject *dict = PyModule_GetDict(value);  /* borrowed */
        PyObject *name = dict ? PyDict_GetItemWithError(dict, self->name_key) : NULL;
        if (name == NULL && PyErr_Occurred()) {
            return -1;
        }
        if (name == NULL || !PyUnicode_CheckExact(name)) {
            return put_placeholder(w, value);
        }
        if (put_cstr(w, "<module ") < 0 || put_str(w, name) < 0) {
            return -1;
        }
        return put_char(w, '>');
    }
    else if (!self->full_repr && !PyType_IsSubtype(kind, &PyModule_Type) &&
             !PyType_IsSubtype(kind, &PyCFunction_Type)) {
        /* PyType_IsSubtype reads the MRO only: no __subclasscheck__ runs */
        return put_placeholder(w, value);
    }
    PyObject *shown = PyObject_CallFunctionObjArgs(
        self->other, value, self->full_repr ? Py_True : Py_False, NULL);  /* owned */
    if (shown != NULL && !PyUnicode_Check(shown)) {
        Py_SETREF(shown, NULL);
        PyErr_SetString(PyExc_TypeError, "capture: other() must return a str");
    }
    return put_owned_str(w, shown);
}

/* capture.py `_text`: the text of `value`, or a prefix of it longer than `room`. */
static int
text(capturer *self, writer *w, PyObject *value, int depth, PyObject **seen, Py_ssize_t room)
{
    PyTypeObject *kind = Py_TYPE(value);
    if (kind == &PyUnicode_Type) {
        Py_ssize_t n = PyUnicode_GET_LENGTH(value);
        return put_str_repr(w, value, n < self->max_repr ? n : self->max_repr);
    }
    if (kind == &PyLong_Type) {
        return put_int(w, value);
    }
    if (is_scalar(value)) {
        return put_scalar(w, value);
    }
    if (kind == &PyBytes_Type || kind == &PyByteArray_Type) {
        return put_bytes_repr(w, value, self->max_repr);
    }
    if (is_container_type(kind)) {
        return container(self, w, value, depth, seen, room);
    }
    return other_value(self, w, value);
}

/* The whole text of the commonest arguments, when it needs no cut: an exact str, an int of
   up to 64 bits, a float, None, a bool, as their own repr makes it (what `text` would write,
   without the writer).  NULL without an exception: take the general path; NULL with one: the
   error of the reference's own repr() (PyObject_Repr runs the signal handlers first, so it is
   often a KeyboardInterrupt, or a handler's exception: never cleared, always reported). */
static PyObject *
quick_text(capturer *self, PyObject *value)
{
    PyTypeObject *kind = Py_TYPE(value);
    PyObject *shown = NULL;  /* owned */
    if (kind == &PyUnicode_Type) {
        if (PyUnicode_GET_LENGTH(value) > self->max_repr) {
            return NULL;  /* repr(value[:max_repr]): the general path cuts first */
        }
        shown = PyObject_Repr(value);  /* the exact str's own repr */
    }
    else if (kind == &PyLong_Type) {
        int overflow = 0;
        if (PyLong_AsLongLongAndOverflow(value, &overflow) == -1 && PyErr_Occurred()) {
            return NULL;  /* cannot happen for an exact int; reported if it does */
        }
        if (overflow) {
            return NULL;  /* > 64 bits: the general path counts them */
        }
        shown = PyObject_Repr(value);  /* <= 64 bits: its repr, as text() writes it */
    }
    else if (kind == &PyFloat_Type || value == Py_None || kind == &PyBool_Type) {
        shown = PyObject_Repr(value);
    }
    else {
        return NULL;
    }
    if (shown == NULL) {
        return NULL;  /* the exception is reported as the general path's would be */
    }
    if (PyUnicode_GET_LENGTH(shown) > self->max_repr) {
        Py_DECREF(shown);
        return NULL;  /* needs the cut */
    }
    return shown;
}

/* capturer(value) -> str: capture.py Capturer.__call__.  An Exception while rendering is handed
   to `failed` (the reference's `except`: a placeholder, or the program's own exception raised
   again); a BaseException that is not an Exception goes on, as it does from the reference. */
static PyObject *
capturer_vectorcall(PyObject *callable, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    capturer *self = (capturer *)callable;
    if (PyVectorcall_NARGS(nargsf) != 1 || (kwnames != NULL && PyTuple_GET_SIZE(kwnames))) {
        PyErr_SetString(PyExc_TypeError, "Capturer takes exactly one argument: the value");
        return NULL;
    }
    PyObject *value = args[0];  /* borrowed: the caller holds it for the call */
    PyObject *result = quick_text(self, value);  /* owned */
    if (result != NULL) {
        return result;
    }
    if (!PyErr_Occurred()) {
        writer w;
        writer_init(&w, self->max_repr);
        PyObject *seen[MAX_DEPTH + 1];
        if (text(self, &w, value, 0, seen, self->max_repr) == 0) {
            result = writer_finish(&w, self->max_repr);
        }
        writer_free(&w);
    }
    if (result == NULL && PyErr_ExceptionMatches(PyExc_Exception)) {
        PyObject *error = PyErr_GetRaisedException();  /* owned */
        result = PyObject_CallFunctionObjArgs(self->failed, value, error, NULL);
        Py_DECREF(error);
    }
    return result;
}

/* ---- the type ---------------------------------------------------------------------- */

static PyObject *
capturer_new(PyTypeObject *type, PyObject *args, PyObject *kwargs)
{
    static char *keywords[] = {"max_repr", "max_items", "full_repr", "redact", "secret_cache",
                               "is_secret", "other", "failed", NULL};
    Py_ssize_t max_repr, max_items;
    int full_repr;
    PyObject *redact, *cache, *is_secret, *other, *failed;  /* borrowed from args */
    if (!PyArg_ParseTupleAndKeywords(args, kwargs, "nnpO!O!OOO:Capturer", keywords, &max_repr,
                                     &max_items, &full_repr, &PyTuple_Type, &redact,
                                     &PyDict_Type, &cache, &is_secret, &other, &failed)) {
        return NULL;
    }
    /* the reference clamps these; lengths are summed in Py_ssize_t, so keep far from its max */
    if (max_repr < 4 || max_items < 0 || max_repr > PY_SSIZE_T_MAX / 16) {
        PyErr_SetString(PyExc_ValueError, "Capturer: max_repr must be in [4, 2**59], "
                                          "max_items >= 0");
        return NULL;
    }
    if (!PyCallable_Check(is_secret) || !PyCallable_Check(other) || !PyCallable_Check(failed)) {
        PyErr_SetString(PyExc_TypeError, "Capturer: is_secret, other, failed must be callable");
        return NULL;
    }
    capturer *self = PyObject_GC_New(capturer, type);
    if (self == NULL) {
        return NULL;
    }
    self->vectorcall = capturer_vectorcall;
    self->max_repr = max_repr;
    self->max_items = max_items;
    self->full_repr = full_repr;
    self->redact = Py_NewRef(redact);
    self->cache = Py_NewRef(cache);
    self->is_secret = Py_NewRef(is_secret);
    self->other = Py_NewRef(other);
    self->failed = Py_NewRef(failed);
    self->name_key = PyUnicode_InternFromString("__name__");
    if (self->name_key == NULL) {
        Py_DECREF(self);  /* not tracked yet: dealloc untracks nothing, clears the rest */
        return NULL;
    }
    PyObject_GC_Track(self);
    return (PyObject *)self;
}

static int
capturer_traverse(capturer *self, visitproc visit, void *arg)
{
    Py_VISIT(self->redact);
    Py_VISIT(self->cache);
    Py_VISIT(self->is_secret);
    Py_VISIT(self->other);
    Py_VISIT(self->failed);
    return 0;
}

static int
capturer_clear(capturer *self)
{
    Py_CLEAR(self->redact);
    Py_CLEAR(self->cache);
    Py_CLEAR(self->is_secret);
    Py_CLEAR(self->other);
    Py_CLEAR(self->failed);
    Py_CLEAR(self->name_key);
    return 0;
}

static void
capturer_dealloc(capturer *self)
{
    PyObject_GC_UnTrack(self);
    (void)capturer_clear(self);
    PyObject_GC_Del(self);
}

static PyTypeObject capturer_type = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "flowtrace_otel._native.Capturer",
    .tp_doc = "Capturer(max_repr, max_items, full_repr, redact, secret_cache, is_secret, "
              "other, failed): capturer(value) -> str, capture.py's Capturer text in C.",
    .tp_basicsize = sizeof(capturer),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_HAVE_VECTORCALL,
    .tp_new = capturer_new,
    .tp_call = PyVectorcall_Call,
    .tp_vectorcall_offset = offsetof(capturer, vectorcall),
    .tp_traverse = (traverseproc)capturer_traverse,
    .tp_clear = (inquiry)capturer_clear,
    .tp_dealloc = (destructor)capturer_dealloc,
};

int
capture_add_type(PyObject *module)
{
    if (PyType_Ready(&capturer_type) < 0) {
        return -1;
    }
    /* PyModule_AddObjectRef does not steal: the static type keeps its own reference */
    return PyModule_AddObjectRef(module, "Capturer", (PyObject *)&capturer_type);
}
