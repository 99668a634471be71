"""A Flask service whose view calls a helper that calls the same service over HTTP.

Run it (it starts its own server on a free local port, sends two requests, and stops):
    flowtrace-otel run examples/flask_service.py          # tree on stderr (no backend needed)
    FLOWTRACE_OTEL=1 python examples/flask_service.py     # function spans to the OTLP endpoint
    FLOWTRACE_OTEL=1 opentelemetry-instrument python examples/flask_service.py   # + HTTP spans

Flask and requests are instrumented with OpenTelemetry's own instrumentations. Their SERVER and
CLIENT spans are recorded once an OpenTelemetry SDK is set up (by ``opentelemetry-instrument``
here, by your application's start-up in real life), and then each order is one trace:

    main -> place_orders -> GET (CLIENT) -> GET /order/<item> (SERVER) -> order -> check_stock
      -> GET (CLIENT) -> GET /stock/<item> (SERVER) -> stock -> count_in_stock

Without an SDK the instrumentations still carry the trace context across each HTTP call, so the
function spans alone form the same tree. The function spans hold the arguments and results
(``flowtrace.arg.item = 'apple'``, ``flowtrace.return = 3``).
"""

from __future__ import annotations

import logging
import threading

import requests
from flask import Flask
from opentelemetry.instrumentation.flask import FlaskInstrumentor
from opentelemetry.instrumentation.requests import RequestsInstrumentor
from werkzeug.serving import make_server

STOCK = {"apple": 3, "pear": 0}

app = Flask(__name__)
# Under `opentelemetry-instrument` both are instrumented already; otherwise do it here.
if not FlaskInstrumentor().is_instrumented_by_opentelemetry:
    FlaskInstrumentor().instrument_app(app)
if not RequestsInstrumentor().is_instrumented_by_opentelemetry:
    RequestsInstrumentor().instrument()
logging.getLogger("werkzeug").setLevel(logging.ERROR)  # no access log lines


def count_in_stock(item: str) -> int:
    return STOCK.get(item, 0)


@app.route("/stock/<item>")
def stock(item: str) -> dict[str, object]:
    return {"item": item, "count": count_in_stock(item)}


def check_stock(base_url: str, item: str) -> int:
    reply = requests.get(f"{base_url}/stock/{item}", timeout=10)
    reply.raise_for_status()
    count: int = reply.json()["count"]
    return count


@app.route("/order/<item>")
def order(item: str) -> dict[str, object]:
    base_url = f"http://127.0.0.1:{app.config['PORT']}"
    count = check_stock(base_url, item)
    return {"item": item, "accepted": count > 0}


def place_orders(base_url: str, items: list[str]) -> list[dict[str, object]]:
    replies = []
    for item in items:
        reply = requests.get(f"{base_url}/order/{item}", timeout=10)
        reply.raise_for_status()
        replies.append(reply.json())
    return replies


def main() -> None:
    server = make_server("127.0.0.1", 0, app, threaded=True)
    app.config["PORT"] = server.server_port
    thread = threading.Thread(target=server.serve_forever, name="server", daemon=True)
    thread.start()
    try:
        for reply in place_orders(f"http://127.0.0.1:{server.server_port}", ["apple", "pear"]):
            print(f"order {reply['item']}: {'accepted' if reply['accepted'] else 'refused'}")
    finally:
        server.shutdown()
        thread.join()


if __name__ == "__main__":
    main()
