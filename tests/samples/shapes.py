"""Sample user code with every call shape the tree has to show (traced for real by the tests)."""

from __future__ import annotations


def fib(n):
    return n if n <= 1 else fib(n - 1) + fib(n - 2)


class Store:
    """A class with an instance, a static and a class method."""

    def __init__(self, name):
        self.name = name

    def save(self, key, value):
        return self._check(key)

    def _check(self, key):
        return len(key)

    @staticmethod
    def helper(x):
        return x * 2

    @classmethod
    def create(cls, name):
        return cls(name)


def outer(x):
    def inner(y):
        return y + 1

    return inner(x) + inner(x + 1)


def with_lambda(values):
    key = lambda v: -v
    return sorted(values, key=key)


def double(x):
    return x * 2


def with_comprehensions(n):
    as_list = [double(i) for i in range(n)]
    as_dict = {i: double(i) for i in range(n)}
    as_set = {double(i) for i in range(n)}
    as_gen = sum(double(i) for i in range(n))
    return len(as_list) + len(as_dict) + len(as_set) + as_gen


def fail(message):
    raise ValueError(message)


def catches():
    try:
        fail("handled")
    except ValueError:
        return "recovered"


def propagates():
    fail("boom")


def catches_inside():
    try:
        raise KeyError("k")
    except KeyError:
        pass
    return 1


def gen(n):
    for i in range(n):
        yield double(i)


def consume(n):
    return list(gen(n))


def middle():
    fail("deep")


def catches_deep():
    try:
        middle()
    except ValueError:
        pass
    return "ok"


def translates():
    try:
        fail("inner")
    except ValueError as error:
        raise KeyError("outer") from error


def catches_translated():
    try:
        translates()
    except KeyError:
        return "handled"


def retries(times):
    for attempt in range(times):
        try:
            return fail(f"try {attempt}")
        except ValueError:
            continue
    return "gave up"


class Passive:
    """A context manager that lets exceptions through."""

    def __enter__(self):
        return self

    def __exit__(self, *exc_info):
        return False


def only_finally():
    try:
        fail("f")
    finally:
        pass


def only_with():
    with Passive():
        fail("w")


def reraises():
    try:
        fail("r")
    except ValueError:
        raise


def walk(n, older=None):
    """A generator that may resume an older generator of its own code from inside itself."""
    if older is not None:
        yield next(older)
    yield double(n)
    yield n


def signature(a, /, b, *args, c, d=4, **kw):
    """Every kind of parameter."""
    return b
