"""Sample program for the CLI tests: reports how it was run, then ends as its arguments ask."""

import os
import pickle
import sys
import threading


class Point:
    pass


def greet(name):
    return f"hello {name}"


def late(n):
    return n * 2


def fail(message):
    raise RuntimeError(message)


def main(argv):
    print(greet(argv[1] if len(argv) > 1 else "nobody"))
    print("argv", argv)
    print("name", __name__)
    print("main-is-me", sys.modules["__main__"].__dict__ is globals())
    print("file", __file__ == os.path.abspath(__file__) and os.path.basename(__file__))
    print("path0", sys.path[0])
    print("pickle", type(pickle.loads(pickle.dumps(Point()))).__name__)
    sys.stdout.flush()
    if "--swallow-stderr" in argv:
        sys.stderr = open(os.devnull, "w")  # the program's own choice
    if "--thread" in argv:
        threading.Thread(target=late, args=(21,), name="straggler").start()
    if "--exit3" in argv:
        sys.exit(3)
    if "--exit-text" in argv:
        sys.exit("bye text")
    if "--boom" in argv:
        fail("boom")
    if "--interrupt" in argv:
        raise KeyboardInterrupt


if __name__ == "__main__":
    main(sys.argv)
