"""Signals that arrive while traced calls run: every one must reach this program's code.

``python interrupts.py MODE [ATTEMPTS]``; MODE is ``sigint`` (Ctrl-C, as
``_thread.interrupt_main`` delivers it), ``alarm`` (a SIGALRM handler raising TimeoutError),
``exit`` (a SIGALRM handler calling ``sys.exit(7)``) or ``forever`` (print "ready", then run
traced calls until a real signal stops the process). With FLOWTRACE_SAMPLE_SESSION=1 the
program traces itself with ``start_tracing()``.
"""

import _thread
import os
import signal
import sys
import threading

#: calls after the signal was sent before it counts as lost (swallowed): a delivered signal's
#: handler runs within a few bytecodes, however loaded the machine is
GRACE = 20_000


def work(n):
    return n + 1


def spin(limit):
    i = 0
    while i < limit:
        i = work(i)
    return i


def spin_until_lost(sent):
    """Run traced calls until the signal's exception arrives; return if it was lost."""
    i = 0
    while not (i % 64 == 0 and sent()):
        i = work(i)
    spin(GRACE)


def interrupt_soon(started, fired, spins):
    started.wait()
    spin(spins)  # vary the moment: the signal lands anywhere in the callbacks' cycle
    _thread.interrupt_main()
    fired.set()


def sigint_attempts(attempts):
    arrived = 0
    for attempt in range(attempts):
        started, fired = threading.Event(), threading.Event()
        timer = threading.Thread(target=interrupt_soon,
                                 args=(started, fired, 50 * (attempt % 13)))
        timer.start()
        try:
            started.set()
            spin_until_lost(fired.is_set)
        except KeyboardInterrupt:
            arrived += 1
        else:
            print(f"lost: KeyboardInterrupt {attempt} never arrived", flush=True)
            return 1
        finally:
            timer.join()
    print(f"arrived {arrived} of {attempts}")
    return 0


def on_alarm(signum, frame):
    raise TimeoutError("too slow")


def alarm_attempts(attempts):
    signal.signal(signal.SIGALRM, on_alarm)
    arrived = 0
    for attempt in range(attempts):
        try:
            signal.setitimer(signal.ITIMER_REAL, 0.0005 + 0.0001 * (attempt % 17))
            spin_until_lost(expired)
        except TimeoutError as error:
            arrived += 1
            assert str(error) == "too slow", error
        else:
            print(f"lost: TimeoutError {attempt} never arrived", flush=True)
            return 1
        finally:
            signal.setitimer(signal.ITIMER_REAL, 0)
    print(f"arrived {arrived} of {attempts}")
    return 0


def expired():
    """True once the alarm has gone off (the kernel has sent SIGALRM)."""
    return signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0)


def exit_on_alarm(signum, frame):
    sys.exit(7)


def exit_attempt():
    signal.signal(signal.SIGALRM, exit_on_alarm)
    signal.setitimer(signal.ITIMER_REAL, 0.002)
    spin_until_lost(expired)
    print("lost: sys.exit(7) never arrived", flush=True)
    return 1


def forever():
    spin(1000)
    print("ready", flush=True)
    while True:
        spin(1000)


def main():
    if os.environ.get("FLOWTRACE_SAMPLE_SESSION") == "1":
        from flowtrace_otel import start_tracing

        start_tracing()
    mode = sys.argv[1]
    attempts = int(sys.argv[2]) if len(sys.argv) > 2 else 40
    if mode == "sigint":
        return sigint_attempts(attempts)
    if mode == "alarm":
        return alarm_attempts(attempts)
    if mode == "exit":
        return exit_attempt()
    return forever()


if __name__ == "__main__":
    sys.exit(main())
