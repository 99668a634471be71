/* Per-code slots in co_extra.
 *
 * C API used, and what each version guarantees:
 *  - 3.12 and 3.13: PyUnstable_Eval_RequestCodeExtraIndex, PyUnstable_Code_GetExtra and
 *    PyUnstable_Code_SetExtra are the "unstable" tier (PEP 689): public and documented, kept
 *    for the whole minor release, but free to change between minor versions (they were the
 *    underscored _PyEval_RequestCodeExtraIndex / _PyCode_GetExtra before 3.12).  A new Python
 *    version must be re-checked against this file.
 *  - An interpreter hands out at most 255 indices and never takes one back, so we request
 *    ours once per process (index_ready) and reuse it across start()/stop().
 *  - The free function runs when the code object is deallocated (code_dealloc calls it for
 *    every non-NULL extra before tearing the object down), with the GIL held in GIL builds.
 */
#include "codeslot.h"

static Py_ssize_t extra_index = -1;

/* Registry of slots whose code is wanted in the current generation.  Invariant: a slot is in
   the list iff slot->linked; its `code` is alive while linked (see codeslot_free). */
static code_slot *registry_head = NULL;

/* Slots attached to living code objects: +1 in codeslot_attach, -1 in codeslot_free.  The
   tests watch it fall when a code object dies (valgrind cannot: CPython itself never frees
   some code objects at exit, and their slots with them). */
static Py_ssize_t slots_alive = 0;

static void
unlink_slot(code_slot *slot)
{
    if (!slot->linked) {
        return;
    }
    if (slot->prev != NULL) {
        slot->prev->next = slot->next;
    }
    else {
        registry_head = slot->next;
    }
    if (slot->next != NULL) {
        slot->next->prev = slot->prev;
    }
    slot->prev = slot->next = NULL;
    slot->linked = 0;
}

/* Called by CPython when a code object carrying our extra dies: unlink, then free. */
static void
codeslot_free(void *extra)
{
    code_slot *slot = (code_slot *)extra;
    if (slot == NULL) {
        return;
    }
    unlink_slot(slot);
    slots_alive--;
    PyMem_RawFree(slot);
}

int
codeslot_init(void)
{
    if (extra_index >= 0) {
        return 0;
    }
    extra_index = PyUnstable_Eval_RequestCodeExtraIndex(codeslot_free);
    if (extra_index < 0) {
        /* The API returns -1 without an exception when the 255 indices are used up. */
        if (!PyErr_Occurred()) {
            PyErr_SetString(PyExc_RuntimeError,
                            "flowtrace_otel._native: no free code-extra index left");
        }
        return -1;
    }
    return 0;
}

int
codeslot_get(PyObject *code, code_slot **slot)
{
    void *extra = NULL;
    /* Returns 0 and sets extra to NULL when nothing was stored at our index yet. */
    if (PyUnstable_Code_GetExtra(code, extra_index, &extra) < 0) {
        return -1;
    }
    *slot = (code_slot *)extra;
    return 0;
}

code_slot *
codeslot_attach(PyObject *code)
{
    /* Raw allocator: the free function may run wherever a code object dies. */
    code_slot *slot = (code_slot *)PyMem_RawCalloc(1, sizeof(code_slot));
    if (slot == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    slot->code = code;  /* borrowed, see code_slot */
    if (PyUnstable_Code_SetExtra(code, extra_index, slot) < 0) {
        PyMem_RawFree(slot);
        return NULL;
    }
    /* From here the code object owns the slot: CPython calls codeslot_free on its death. */
    slots_alive++;
    return slot;
}

void
codeslot_register(code_slot *slot)
{
    if (slot->linked) {
        return;
    }
    slot->prev = NULL;
    slot->next = registry_head;
    if (registry_head != NULL) {
        registry_head->prev = slot;
    }
    registry_head = slot;
    slot->linked = 1;
}

void
codeslot_unregister_all(void)
{
    while (registry_head != NULL) {
        unlink_slot(registry_head);
    }
}

PyObject *
codeslot_stats(void)
{
    PyObject *result = PyList_New(0);  /* owned: returned to the caller */
    if (result == NULL) {
        return NULL;
    }
    for (code_slot *slot = registry_head; slot != NULL; slot = slot->next) {
        /* slot->code is alive: linked slots belong to living code objects. */
        PyObject *row = Py_BuildValue("(OKK)", slot->code,
                                      (unsigned long long)slot->calls,
                                      (unsigned long long)slot->total_ns);  /* owned */
        if (row == NULL) {
            Py_DECREF(result);
            return NULL;
        }
        int failed = PyList_Append(result, row);  /* the list takes its own reference */
        Py_DECREF(row);
        if (failed < 0) {
            Py_DECREF(result);
            return NULL;
        }
    }
    return result;
}

Py_ssize_t
codeslot_alive(void)
{
    return slots_alive;
}
