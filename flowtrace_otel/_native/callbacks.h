/* The sys.monitoring callbacks, METH_FASTCALL builtins registered by start(). */
#ifndef FLOWTRACE_NATIVE_CALLBACKS_H
#define FLOWTRACE_NATIVE_CALLBACKS_H

#include "state.h"

/* PY_START(code, instruction_offset) */
PyObject *callbacks_py_start(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

/* PY_RETURN(code, instruction_offset, retval) */
PyObject *callbacks_py_return(PyObject *module, PyObject *const *args, Py_ssize_t nargs);

#endif
