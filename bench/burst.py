"""Burst delivery: 600 requests in a tight loop under ``FLOWTRACE_OTEL=1``; what arrives?

Runs ``bench/workloads/request.py``'s handler ``--requests`` times from module code (each request
a trace of its own) in a child process exporting over OTLP http/protobuf to a real receiver
(:class:`flowtrace_otel.testing.OtlpReceiver`), then counts the root spans delivered, the
spans delivered, the spans whose parent never arrived (orphans) and the child's peak RSS::

    .venv-3.12/bin/python bench/burst.py --requests 600
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from flowtrace_otel.testing import OtlpReceiver

HERE = Path(__file__).resolve().parent
PROGRAM = textwrap.dedent("""
    import resource, sys
    sys.path.insert(0, {workloads!r})
    import request
    payloads = request.make_payloads({requests})
    for body in payloads:
        request.handle(body)
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, flush=True)
""")


def run(requests: int, extra_env: dict[str, str]) -> dict[str, object]:
    """One burst; the delivery figures."""
    program = PROGRAM.format(workloads=str(HERE / "workloads"), requests=requests)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FLOWTRACE", "OTEL_"))}
    with OtlpReceiver(grpc=False) as receiver:
        env.update({"FLOWTRACE_OTEL": "1", "OTEL_SERVICE_NAME": "burst", **receiver.env(),
                    **extra_env})
        done = subprocess.run([sys.executable, "-c", program], env=env, capture_output=True,
                              text=True, timeout=600, check=True)
        spans = receiver.spans()  # the child flushed before it exited
    ids = {s["span_id"] for s in spans}
    roots = [s for s in spans if s["name"] == "handle"]
    orphans = [s for s in spans if s["parent_id"] is not None and s["parent_id"] not in ids]
    dropped = [r["attributes"].get("flowtrace.dropped_traces") for r in roots
               if "flowtrace.dropped_traces" in r["attributes"]]
    return {"requests": requests, "roots": len(roots), "spans": len(spans),
            "orphans": len(orphans), "traces": len({s["trace_id"] for s in spans}),
            "peak_rss_kb": int(done.stdout.split()[-1]),
            "dropped_traces_reported": sum(d for d in dropped if d),
            "stderr": done.stderr.strip().splitlines()[-3:]}


def main() -> None:
    """Print the figures as JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=600)
    parser.add_argument("--env", nargs="*", default=[], help="extra NAME=VALUE for the child")
    args = parser.parse_args()
    extra = dict(item.split("=", 1) for item in args.env)
    print(json.dumps(run(args.requests, extra), indent=1))


if __name__ == "__main__":
    main()
