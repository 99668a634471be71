/* Safe, bounded text for captured values: the C twin of flowtrace_otel/capture.py's Capturer.
 *
 * _native.Capturer(max_repr, max_items, full_repr, redact, secret_cache, is_secret, other,
 * failed) is a callable: capturer(value) -> str, the same text, byte for byte, as the Python
 * Capturer.__call__ with the same options (the Python code is the reference; a Hypothesis
 * differential test compares the two).  It calls no user code: exact builtin types are read
 * through the C API, and anything else is a placeholder built from its type's name, or is
 * handed to `other` (our own Python function, for functions, classes, modules, full_repr).
 */
#ifndef FLOWTRACE_NATIVE_CAPTURE_H
#define FLOWTRACE_NATIVE_CAPTURE_H

#include "state.h"

/* Ready the Capturer type and add it to `module`; -1 with an exception on error. */
int capture_add_type(PyObject *module);

#endif
