"""Threads in the core call tree: work runs under the call that started or submitted it.

Observed in ``threading`` and ``concurrent.futures``, never patched. A thread with no traced
starter is a trace of its own. The tracer never makes threading see threads it did not know.
"""

from __future__ import annotations

import _thread
import threading
from concurrent.futures import ThreadPoolExecutor

from flowtrace_otel import TraceSession
from flowtrace_otel.session import registry
from tests._calltree import check_well_formed, children, named, one, parent_name


def leaf(x):
    return x


def work(x):
    return leaf(x) + 1


def start_and_join():
    t = threading.Thread(target=work, args=(1,), name="worker-a")
    t.start()
    leaf("starter")
    t.join()
    return "joined"


def test_thread_target_is_child_of_starter():
    with TraceSession() as s:
        assert start_and_join() == "joined"
    events = s.events
    check_well_formed(events)
    target = one(events, "work")
    starter = one(events, "start_and_join")
    assert target.parent_id == starter.id
    assert target.thread_name == "worker-a"
    assert target.thread_id != starter.thread_id
    assert [c.func_name for c in children(events, target)] == ["leaf"]


def start_only(release):
    t = threading.Thread(target=wait_then_work, args=(release,))
    t.start()
    return t


def wait_then_work(release):
    release.wait()
    return work(2)


def test_thread_outliving_its_starter():
    release = threading.Event()
    with TraceSession() as s:
        t = start_only(release)
        release.set()
        t.join()
    events = s.events
    check_well_formed(events, outliving={"wait_then_work"})
    target = one(events, "wait_then_work")
    starter = one(events, "start_only")
    assert target.parent_id == starter.id
    assert target.end_ns > starter.end_ns  # allowed: the thread outlives its starter


def test_thread_without_traced_starter_is_a_root():
    with TraceSession() as s:
        t = threading.Thread(target=work, args=(3,))  # started from the untraced test body
        t.start()
        t.join()
    events = s.events
    check_well_formed(events)
    assert one(events, "work").parent_id is None


def explode():
    leaf("before")
    raise RuntimeError("thread died")


def start_exploding():
    t = threading.Thread(target=explode, name="doomed")
    t.start()
    t.join()


def test_thread_dying_with_exception(monkeypatch):
    seen = []
    monkeypatch.setattr(threading, "excepthook", seen.append)
    with TraceSession() as s:
        start_exploding()
    assert len(seen) == 1 and isinstance(seen[0].exc_value, RuntimeError)  # as without tracing
    events = s.events
    check_well_formed(events)
    died = one(events, "explode")
    assert parent_name(events, died) == "start_exploding"
    assert (died.status, died.exc_type, died.exc_msg) == ("raised", "RuntimeError",
                                                          "thread died")
    assert died.exc_state == "propagated"


class Greeter(threading.Thread):
    def run(self):
        leaf(self.name)


def start_subclass():
    g = Greeter(name="greeter")
    g.start()
    g.join()


def test_thread_subclass_run():
    with TraceSession() as s:
        start_subclass()
    events = s.events
    check_well_formed(events)
    run = one(events, "Greeter.run")
    assert parent_name(events, run) == "start_subclass"
    assert run.thread_name == "greeter"


def meet(barrier, x):
    barrier.wait()
    return work(x)


def submit_and_map(pool):
    # two items that must run at once: both workers start here, under this call
    barrier = threading.Barrier(2)
    both = [pool.submit(meet, barrier, x) for x in (1, 2)]
    first = pool.submit(work, 10).result()
    rest = list(pool.map(work, [20, 30]))
    return [*(f.result() for f in both), first, *rest]


def test_pool_submit_and_map_are_children_of_submitter():
    with ThreadPoolExecutor(max_workers=2) as pool:
        with TraceSession() as s:
            assert submit_and_map(pool) == [2, 3, 11, 21, 31]
            # work submitted by untraced code afterwards, on both of the same workers,
            # must not inherit the submitter that started them
            barrier = threading.Barrier(2)
            later = [pool.submit(meet, barrier, x) for x in (40, 50)]
            assert [f.result() for f in later] == [41, 51]
    events = s.events
    check_well_formed(events)
    submitter = one(events, "submit_and_map")
    meets = named(events, "meet")
    works = [w for w in named(events, "work") if parent_name(events, w) != "meet"]
    assert len(meets) == 4 and len(works) == 3
    assert [e.parent_id for e in meets[:2] + works] == [submitter.id] * 5
    assert [e.parent_id for e in meets[2:]] == [None, None]
    assert len({e.thread_id for e in meets[2:]}) == 2
    assert all(e.thread_id != submitter.thread_id for e in meets + works)
    assert all(e.thread_name.startswith("ThreadPoolExecutor") for e in meets + works)


def start_idle_worker(pool):
    pool._adjust_thread_count()  # what submit() does: starts the worker here, with no item


def test_worker_started_by_traced_call_does_not_adopt_untraced_work():
    """Deterministic form of a race: the worker's first item comes from untraced code."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        with TraceSession() as s:
            start_idle_worker(pool)
            assert pool.submit(work, 1).result() == 2
    events = s.events
    check_well_formed(events)
    assert one(events, "work").parent_id is None


def pool_inside():
    with ThreadPoolExecutor(max_workers=3) as pool:
        futures = [pool.submit(work, i) for i in range(6)]
        return sorted(f.result() for f in futures)


def test_pool_created_inside_traced_function():
    with TraceSession() as s:
        assert pool_inside() == [1, 2, 3, 4, 5, 6]
    events = s.events
    check_well_formed(events)
    top = one(events, "pool_inside")
    works = named(events, "work")
    assert len(works) == 6
    assert all(w.parent_id == top.id for w in works)


def record_dummy(out, done):
    out.append(threading._active.get(threading.get_ident()))  # type: ignore[attr-defined]
    leaf("raw")
    done.release()


def test_raw_thread_gets_no_dummy_thread_object():
    """A thread threading does not know stays unknown to it: the tracer never registers one."""
    out: list[object] = []
    done = _thread.allocate_lock()
    done.acquire()
    count_before = threading.active_count()
    with TraceSession() as s:
        _thread.start_new_thread(record_dummy, (out, done))
        done.acquire()
    assert out == [None]
    assert threading.active_count() == count_before
    events = s.events
    check_well_formed(events)
    assert one(events, "record_dummy").thread_name.startswith("thread-")


def many_threads(n):
    for i in range(n):
        t = threading.Thread(target=work, args=(i,))
        t.start()
        t.join()


def test_finished_threads_are_forgotten():
    with TraceSession() as s:
        many_threads(20)
        monitor = s._monitor
        assert monitor is not None
        alive = {t.ident for t in threading.enumerate()}
        assert set(monitor.states) <= alive
    events = s.events
    check_well_formed(events)
    assert len(named(events, "work")) == 20
    assert {parent_name(events, e) for e in named(events, "work")} == {"many_threads"}


def run_fresh_function_on_threads(source_path, n_threads):
    namespace: dict[str, object] = {}
    exec(compile("def fresh(x):\n    return x + 1\n", source_path, "exec"), namespace)
    fresh = namespace["fresh"]
    barrier = threading.Barrier(n_threads)

    def go(i):
        barrier.wait()
        return fresh(i)  # every thread meets this new code object at the same moment

    with ThreadPoolExecutor(max_workers=n_threads) as pool:
        return sorted(pool.map(go, range(n_threads)))


def test_threads_meeting_a_new_function_at_once(tmp_path):
    """One CodeInfo per code object even when threads race to learn it (returns must match)."""
    for round_ in range(40):
        with TraceSession() as s:
            path = str(tmp_path / f"fresh_{round_}.py")
            assert run_fresh_function_on_threads(path, 4) == list(range(1, 5))
        events = s.events
        check_well_formed(events)
        fresh = named(events, "fresh")
        assert len(fresh) == 4
        assert all(e.status == "returned" for e in fresh)


def decided_while_another_thread_waits(x):
    return x


def first_met_by_the_stuck_thread(x):
    return x


def test_a_thread_stuck_inside_a_callback_never_blocks_another_thread() -> None:
    """Callbacks take no lock: a thread preempted (or frozen at exit) mid-callback stalls nobody.

    A daemon thread frozen at interpreter exit while holding a lock would otherwise hang the
    main thread's next callback for ever (seen: a process that never exited).
    """
    session = TraceSession()
    session.start()
    monitor = registry.monitor
    assert monitor is not None
    inside, release = threading.Event(), threading.Event()
    released_in_time = []
    decide = monitor.filter.is_user_code

    def slow_decision(code):
        if code.co_name == "first_met_by_the_stuck_thread":
            inside.set()
            # stands for a thread that lost the GIL, or was frozen at exit, right here
            released_in_time.append(release.wait(15))
        return decide(code)

    monitor.filter.is_user_code = slow_decision  # type: ignore[method-assign]
    stuck = threading.Thread(target=first_met_by_the_stuck_thread, args=(1,), daemon=True)
    stuck.start()
    try:
        assert inside.wait(10)
        done = threading.Event()
        other = threading.Thread(target=lambda: (decided_while_another_thread_waits(2),
                                                 done.set()), daemon=True)
        other.start()
        assert done.wait(10), "a callback waited for a thread stuck in another callback"
    finally:
        release.set()
        stuck.join(10)
        session.stop()
    assert released_in_time == [True], "this thread waited for the stuck one"
    assert named(session.events, "decided_while_another_thread_waits")
