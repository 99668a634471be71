"""The tree a person would draw: an asyncio service with a gather fan-out, a thread pool and a
generator pipeline, all at once, recorded as exactly the call tree the code reads as."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

from flowtrace_otel import TraceSession
from tests._calltree import check_well_formed, named, one, parent_name, tree


def parse(line):
    return line.strip().upper()


def read_lines(text):
    for line in text.splitlines():
        yield parse(line)


def keep_long(lines):
    for line in lines:
        if len(line) > 1:
            yield line


def checksum(line):
    return sum(map(ord, line))


def crunch(lines):
    return [checksum(line) for line in lines]


async def fetch(name, pool):
    await asyncio.sleep(0)
    lines = list(keep_long(read_lines(f"{name}\nx\n{name}{name}")))
    loop = asyncio.get_running_loop()
    return await loop.run_in_executor(pool, crunch, lines)


async def serve(names):
    with ThreadPoolExecutor(max_workers=2) as pool:
        results = await asyncio.gather(*(fetch(n, pool) for n in names))
    return dict(zip(names, results, strict=True))


def handle_request(names):
    return asyncio.run(serve(names))


def test_service_tree():
    expected = handle_request(["ab", "cd", "ef"])  # untraced run: the result to compare
    with TraceSession() as s:
        assert handle_request(["ab", "cd", "ef"]) == expected
    events = s.events
    check_well_formed(events)
    fetch_subtree = ["fetch", [
        ["crunch", [["checksum", []], ["checksum", []]]],
        ["keep_long", [
            ["read_lines", [["parse", []], ["parse", []], ["parse", []]]],
        ]],
    ]]
    assert tree(events) == [
        ["handle_request", [
            ["serve", [fetch_subtree, fetch_subtree, fetch_subtree]],
        ]],
    ]
    serve_ev = one(events, "serve")
    for f in named(events, "fetch"):
        assert f.parent_id == serve_ev.id
        assert f.task is not None
        assert f.resumes >= 2  # the sleep and the executor await
    crunches = named(events, "crunch")
    assert all(c.thread_id != threading.get_ident() for c in crunches)
    assert {parent_name(events, c) for c in crunches} == {"fetch"}
    # generators are children of their first consumer, and pipelines stay nested
    assert {parent_name(events, g) for g in named(events, "read_lines")} == {"keep_long"}
    assert all(g.status == "returned" for g in named(events, "keep_long"))
