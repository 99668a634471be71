/* flowtrace_otel._native.HotPath: the C PY_START/PY_RETURN callbacks of the native core.
 *
 * The native core (flowtrace_otel/native_monitor.py) is the Python reference Monitor with its
 * two hottest callbacks replaced by the methods of a HotPath object: they run the common path
 * of monitoring.py's py_start/py_return in C, on the same Python objects (records.Record,
 * ThreadState, the same stacks), and hand every unusual case to the Python callback, which then
 * does all of the work with the reference semantics.  See monitor.c for the exact split.
 */
#ifndef FLOWTRACE_NATIVE_MONITOR_H
#define FLOWTRACE_NATIVE_MONITOR_H

#include "state.h"

/* Ready the HotPath type and add it to `module`; -1 with an exception on error. */
int monitor_add_type(PyObject *module);

#endif
