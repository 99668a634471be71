"""Flask's tutorial pattern: a database handle per request, closed by ``teardown_appcontext``.

``get_db`` opens a connection on first use in a request and keeps it on ``g``; ``close_db``
closes it after the request, when Flask tears the app context down (after the request span of
opentelemetry-instrumentation-flask has ended). The view's blueprint also has an
``after_request`` and a ``teardown_request`` handler (they run under the request span).

Serves ``N`` (argv[1]) requests to the view and ``N`` for a static file (no traced call runs
under a static file's request span, only ``close_db`` after it) on a real werkzeug server, one
thread per request, or all on one thread when argv[2] is ``one-thread``, and prints how many
succeeded. The server is started by module code (no traced call hands its threads a parent).
No OpenTelemetry code here.
"""

from __future__ import annotations

import sqlite3
import sys
import tempfile
import threading
import urllib.request
from pathlib import Path

from flask import Blueprint, Flask, g
from werkzeug.serving import make_server

STATIC = tempfile.TemporaryDirectory()  # removed at exit
Path(STATIC.name, "hello.txt").write_text("hello")
app = Flask(__name__, static_folder=STATIC.name, static_url_path="/static")


def get_db() -> sqlite3.Connection:
    if "db" not in g:
        g.db = sqlite3.connect(":memory:")
    return g.db


@app.teardown_appcontext
def close_db(exc: BaseException | None) -> None:
    db = g.pop("db", None)
    if db is not None:
        db.close()


counting = Blueprint("counting", __name__)


@counting.after_request
def stamp(response):  # type: ignore[no-untyped-def]
    response.headers["X-Stamp"] = "1"
    return response


@counting.teardown_request
def forget(exc: BaseException | None) -> None:
    g.pop("scratch", None)


@counting.route("/count/<int:n>")
def count(n: int) -> str:
    row = get_db().execute("select ? + 1", (n,)).fetchone()
    return str(row[0])


app.register_blueprint(counting)


if __name__ == "__main__":
    server = make_server("127.0.0.1", 0, app, threaded=sys.argv[2:] != ["one-thread"])
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    ok = 0
    for n in range(int(sys.argv[1])):
        for path, expected in ((f"/count/{n}", str(n + 1)), ("/static/hello.txt", "hello")):
            url = f"http://127.0.0.1:{server.server_port}{path}"
            with urllib.request.urlopen(url, timeout=10) as reply:
                ok += reply.read().decode() == expected
    server.shutdown()
    thread.join()
    print(ok)
