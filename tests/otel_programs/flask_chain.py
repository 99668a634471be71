"""A plain Flask service: /order calls a helper that calls /stock on the same service.

No OpenTelemetry code here: run it under ``opentelemetry-instrument`` with FLOWTRACE_OTEL=1.
"""

from __future__ import annotations

import sys
import threading
import urllib.request

import requests
from flask import Flask, jsonify
from werkzeug.serving import make_server

app = Flask(__name__)
BASE = ""


def check_stock(item: str) -> int:
    reply = requests.get(f"{BASE}/stock/{item}", timeout=10)
    return int(reply.json()["count"])


@app.route("/order/<item>")
def order(item: str):  # type: ignore[no-untyped-def]
    count = check_stock(item)
    return jsonify(item=item, available=count > 0)


@app.route("/stock/<item>")
def stock(item: str):  # type: ignore[no-untyped-def]
    return jsonify(count=lookup(item))


def lookup(item: str) -> int:
    return {"apple": 3}.get(item, 0)


def serve_once() -> str:
    global BASE
    server = make_server("127.0.0.1", 0, app, threaded=True)
    BASE = f"http://127.0.0.1:{server.server_port}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        with urllib.request.urlopen(f"{BASE}/order/apple", timeout=10) as reply:
            return reply.read().decode()
    finally:
        server.shutdown()
        thread.join()


if __name__ == "__main__":
    sys.stdout.write(serve_once())
