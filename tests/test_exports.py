"""Flame graph (folded stacks) and Perfetto (Chrome trace-event JSON) exports, parsed back."""

from __future__ import annotations

import asyncio
import itertools
import json
import sys
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import flowtrace_otel
from flowtrace_otel import TraceSession, to_folded, to_perfetto
from flowtrace_otel.events import CallEvent


def parse(n: int) -> int:
    return sum(range(n))


def load(n: int) -> int:
    return parse(n) + parse(n // 2)


def main() -> int:
    return load(20000) + parse(5000)


def spin(n: int) -> int:
    return sum(range(n))


def numbers(n: int):
    for i in range(n):
        yield spin(2000) + i


def consume() -> int:
    total = 0
    for value in numbers(5):
        total += value + spin(3000)  # the consumer works while the generator is suspended
    return total


def repeat(n: int) -> int:
    return sum(spin(500) for _ in range(n))


def folded_lines(text: str) -> dict[str, int]:
    """``stack value`` lines as a dict; every line must have that shape."""
    out: dict[str, int] = {}
    for line in text.splitlines():
        stack, _, value = line.rpartition(" ")
        assert stack and value.isdigit() and int(value) > 0, line
        assert stack not in out, f"duplicate stack {stack}"
        out[stack] = int(value)
    return out


def root(events: list[CallEvent]) -> CallEvent:
    (first,) = [e for e in events if e.parent_id is None]
    return first


def test_folded_stacks_name_the_call_paths_and_sum_to_the_run() -> None:
    with TraceSession() as session:
        main()
    events = session.events
    stacks = folded_lines(to_folded(events))
    assert set(stacks) == {"main", "main;load", "main;load;parse", "main;parse"}
    # self times add up to the outermost call's duration (each line rounds to a microsecond)
    assert abs(sum(stacks.values()) - root(events).duration * 1e6) <= len(stacks)


def test_folded_calls_still_count_their_time() -> None:
    with TraceSession(record_fold_after=3) as session:
        repeat(200)
    events = session.events
    assert any(e.fold is not None for e in events)
    stacks = folded_lines(to_folded(events))
    assert set(stacks) <= {"repeat", "repeat;spin"}
    assert abs(sum(stacks.values()) - root(events).duration * 1e6) <= len(stacks)
    folded_ns = sum(e.fold.total_ns for e in events if e.fold is not None)
    assert stacks["repeat;spin"] * 1000 >= folded_ns - 1000


def test_generator_suspensions_are_the_consumers_time() -> None:
    with TraceSession() as session:
        consume()
    events = session.events
    stacks = folded_lines(to_folded(events))
    assert {"consume;numbers", "consume;numbers;spin", "consume;spin"} <= set(stacks)
    assert abs(sum(stacks.values()) - root(events).duration * 1e6) <= len(stacks)
    generator = next(e for e in events if e.func_name == "numbers")
    assert generator.suspended_ns > 0
    # the generator's line has its own running time only, never its suspended time
    assert stacks["consume;numbers"] * 1000 < generator.end_ns - generator.start_ns - (
        generator.suspended_ns) + 1000


def test_import_time_calls_are_under_their_own_frame(tmp_path: Path) -> None:
    (tmp_path / "plugins_for_flame.py").write_text(
        "def register(n):\n    return sum(range(n))\n\nDONE = [register(5000) for _ in range(3)]\n")
    sys.path.insert(0, str(tmp_path))
    try:
        with TraceSession() as session:
            import plugins_for_flame  # noqa: F401 - the import is what is traced
    finally:
        sys.path.remove(str(tmp_path))
        sys.modules.pop("plugins_for_flame", None)
    assert set(folded_lines(to_folded(session.events))) == {"<import>;register"}


def test_folded_file_is_written(tmp_path: Path) -> None:
    with TraceSession() as session:
        main()
    target = tmp_path / "calls.folded"
    text = to_folded(session.events, target)
    assert target.read_text(encoding="utf-8") == text


# --- Perfetto -----------------------------------------------------------------------------------


def check_loadable(document: dict[str, Any]) -> tuple[list[dict[str, Any]], dict[int, str]]:
    """What a trace-event loader needs: typed fields, named tracks, slices that nest per track."""
    assert set(document) >= {"traceEvents"}
    events = document["traceEvents"]
    slices = [e for e in events if e["ph"] == "X"]
    meta = [e for e in events if e["ph"] == "M"]
    assert len(slices) + len(meta) == len(events), "only X and M events"
    names = {e["tid"]: e["args"]["name"] for e in meta if e["name"] == "thread_name"}
    assert any(e["name"] == "process_name" for e in meta)
    per_track: dict[int, list[dict[str, Any]]] = defaultdict(list)
    for s in slices:
        assert isinstance(s["name"], str) and s["name"]
        assert isinstance(s["pid"], int) and isinstance(s["tid"], int)
        assert isinstance(s["ts"], (int, float)) and s["ts"] >= 0
        assert isinstance(s["dur"], (int, float)) and s["dur"] >= 0
        assert isinstance(s["args"], dict)
        assert s["tid"] in names, "every track is named"
        per_track[s["tid"]].append(s)
    for track in per_track.values():  # slices on one track nest or follow, never cross
        open_ends: list[float] = []
        for s in sorted(track, key=lambda s: (s["ts"], -s["dur"])):
            while open_ends and open_ends[-1] <= s["ts"]:
                open_ends.pop()
            assert not open_ends or s["ts"] + s["dur"] <= open_ends[-1] + 1e-6, s
            open_ends.append(s["ts"] + s["dur"])
    return slices, names


def test_perfetto_slices_carry_arguments_results_and_outcomes() -> None:
    with TraceSession() as session:
        main()
    document = json.loads(to_perfetto(session.events))
    slices, names = check_loadable(document)
    assert list(names.values()) == ["thread MainThread"]
    by_name = {s["name"]: s for s in slices}
    assert set(by_name) == {"main", "load", "parse"}
    load_slice = by_name["load"]
    assert load_slice["args"]["arg.n"] == "20000"
    assert load_slice["args"]["return"] == str(load(20000))
    assert load_slice["args"]["status"] == "returned"
    assert load_slice["args"]["function"] == "test_exports.load"
    main_slice = by_name["main"]
    assert main_slice["ts"] == 0
    assert main_slice["ts"] <= load_slice["ts"]
    assert load_slice["ts"] + load_slice["dur"] <= main_slice["ts"] + main_slice["dur"]


def worker_job(n: int) -> int:
    return spin(n)


def threaded() -> int:
    results: list[int] = []
    thread = threading.Thread(target=lambda: results.append(worker_job(1000)), name="worker")
    thread.start()
    thread.join()
    return results[0]


async def fetch(n: int) -> int:
    await asyncio.sleep(0)
    return spin(n)


async def gather_all() -> list[int]:
    return await asyncio.gather(fetch(100), fetch(200), fetch(300))


def test_perfetto_has_a_track_per_thread_and_per_task() -> None:
    with TraceSession() as session:
        threaded()
        asyncio.run(gather_all())
    slices, names = check_loadable(json.loads(to_perfetto(session.events)))
    labels = sorted(names.values())
    assert "thread MainThread" in labels and "thread worker" in labels
    task_tracks = [label for label in labels if label.startswith("task ")]
    assert len(task_tracks) == 3, labels
    fetches = [s for s in slices if s["name"] == "fetch"]
    assert len({s["tid"] for s in fetches}) == 3  # each task on its own track
    job = next(s for s in slices if s["name"] == "worker_job")
    assert names[job["tid"]] == "thread worker"


def test_perfetto_generators_are_a_slice_per_run_between_suspensions() -> None:
    with TraceSession() as session:
        consume()
    slices, _ = check_loadable(json.loads(to_perfetto(session.events)))
    runs = sorted((s for s in slices if s["name"] == "numbers"), key=lambda s: s["ts"])
    # five yields: the first run, four runs between them, the run that returns
    assert [s["args"]["run"] for s in runs] == [f"{i} of 6" for i in range(1, 7)]
    assert all(s["args"]["resumes"] == 5 and s["args"]["suspended_ms"] > 0 for s in runs)
    (caller,) = [s for s in slices if s["name"] == "consume"]
    assert {s["tid"] for s in runs} == {caller["tid"]}  # each run nests in its consumer
    for before, after in itertools.pairwise(runs):
        assert before["ts"] + before["dur"] <= after["ts"]
    inside = [s for s in slices if s["name"] == "spin" and s["args"]["arg.n"] == "2000"]
    between = [s for s in slices if s["name"] == "spin" and s["args"]["arg.n"] == "3000"]
    assert len(inside) == len(between) == 5

    def within(child: dict[str, Any], outer: dict[str, Any]) -> bool:
        return outer["ts"] <= child["ts"] and (
            child["ts"] + child["dur"] <= outer["ts"] + outer["dur"] + 0.001)

    assert all(any(within(s, run) for run in runs) for s in inside)
    assert not any(within(s, run) for s in between for run in runs)  # the consumer's time


def test_run_slices_are_bounded_and_the_last_runs_to_the_end() -> None:
    from flowtrace_otel.records import MAX_RUN_MARKS

    def many(n: int):
        yield from range(n)

    with TraceSession() as session:
        assert sum(many(3 * MAX_RUN_MARKS)) == sum(range(3 * MAX_RUN_MARKS))
    (event,) = [e for e in session.events if e.func_name.endswith("many")]
    assert event.resumes == 3 * MAX_RUN_MARKS
    assert len(event.runs) == MAX_RUN_MARKS // 2 + 1
    assert event.runs[0][0] == event.start_ns and event.runs[-1][1] == event.end_ns
    assert all(a <= b <= c <= d for (a, b), (c, d) in itertools.pairwise(event.runs))


def test_perfetto_folds_are_slices_with_their_aggregate() -> None:
    with TraceSession(record_fold_after=3) as session:
        repeat(50)
    slices, _ = check_loadable(json.loads(to_perfetto(session.events)))
    (fold,) = [s for s in slices if s["name"].endswith("(folded)")]
    assert fold["name"] == "spin ×47 (folded)"
    assert fold["args"]["folded_calls"] == 47
    assert fold["args"]["min_ms"] <= fold["args"]["max_ms"] <= fold["args"]["total_ms"]


def test_exports_are_reexported_and_empty_input_is_valid(tmp_path: Path) -> None:
    assert flowtrace_otel.to_folded is to_folded and flowtrace_otel.to_perfetto is to_perfetto
    assert to_folded([]) == ""
    target = tmp_path / "trace.json"
    document = json.loads(to_perfetto([], target))
    assert json.loads(target.read_text(encoding="utf-8")) == document
    check_loadable(document)
