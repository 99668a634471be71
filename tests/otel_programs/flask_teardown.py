"""Flask's tutorial pattern: a database handle per request, closed by ``teardown_appcontext``.

``get_db`` opens a connection on first use in a request and keeps it on ``g``; ``close_db``
closes it after the request, when Flask tears the app context down (after the request span of
opentelemetry-instrumentation-flask has ended). Also an ``after_request`` and a
``teardown_request`` handler. Serves ``N`` requests (argv[1]) on a real werkzeug server, one
thread per request, and prints how many succeeded. No OpenTelemetry code here.
"""

from __future__ import annotations

import sqlite3
import sys
import threading
import urllib.request

from flask import Flask, g
from werkzeug.serving import make_server

app = Flask(__name__)


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(":memory:")
    return g.db


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


@app.after_request
def stamp(response):  # type: ignore[no-untyped-def]
    response.headers["X-Stamp"] = "1"
    return response


@app.teardown_request
def forget(exc: BaseException | None) -> None:
    g.pop("scratch", None)


@app.route("/count/<int:n>")
def count(n: int) -> str:
    row = get_db().execute("select ? + 1", (n,)).fetchone()
    return str(row[0])


def serve(requests: int) -> int:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ok = 0
    try:
        for n in range(requests):
            url = f"http://127.0.0.1:{server.server_port}/count/{n}"
            with urllib.request.urlopen(url, timeout=10) as reply:
                ok += reply.read().decode() == str(n + 1)
    finally:
        server.shutdown()
        thread.join()
    return ok


if __name__ == "__main__":
    print(serve(int(sys.argv[1])))
