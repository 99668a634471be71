"""A request handler: JSON in, about 60 user calls of ordinary work, JSON out.

The benchmark's driver calls :func:`handle` once per request from outside user code, so every
request is a trace of its own, as in a web server.
"""

from __future__ import annotations

import json
import random

ROOT = "handle"

CATALOG = {
    f"SKU-{i:04d}": {"price": 100 + (i * 37) % 900, "category": ("book", "food", "tool")[i % 3],
                     "stock": (i * 13) % 50}
    for i in range(200)
}
TAX_RATES = {"book": 0.05, "food": 0.07, "tool": 0.2}
COUNTRIES = {"FR", "DE", "US", "JP", "BR"}


def make_payloads(count: int, seed: int = 7) -> list[str]:
    """``count`` different order requests, 8 line items each, as JSON text."""
    rng = random.Random(seed)
    out = []
    for n in range(count):
        items = [{"sku": f"SKU-{rng.randrange(200):04d}", "qty": rng.randrange(1, 5)}
                 for _ in range(8)]
        order = {"id": n, "customer": {"name": f"customer {n}", "email": f"c{n}@example.com",
                                       "country": rng.choice(sorted(COUNTRIES))},
                 "coupon": rng.choice(["", "SAVE10", "BULK"]), "items": items}
        out.append(json.dumps(order))
    return out


def handle(body: str) -> str:
    """One request: parse, validate, price, respond."""
    order = parse_request(body)
    errors = validate_order(order)
    if errors:
        return json.dumps({"ok": False, "errors": errors})
    lines, subtotal = price_order(order)
    tax = compute_tax(lines)
    ship = shipping(order["customer"]["country"], subtotal)
    return build_response(order, lines, subtotal, tax, ship)


def parse_request(body: str) -> dict:
    """Decode the JSON body."""
    return json.loads(body)


def validate_order(order: dict) -> list[str]:
    """Every problem found in the order (empty when it is fine)."""
    errors = validate_customer(order["customer"])
    for item in order["items"]:
        errors.extend(validate_item(item))
    return errors


def validate_customer(customer: dict) -> list[str]:
    """Check name, e-mail and country."""
    errors = []
    if not customer.get("name"):
        errors.append("name missing")
    if "@" not in customer.get("email", ""):
        errors.append("bad e-mail")
    if customer.get("country") not in COUNTRIES:
        errors.append("country not served")
    return errors


def validate_item(item: dict) -> list[str]:
    """Check one line item."""
    errors = []
    if not check_sku(item["sku"]):
        errors.append(f"unknown sku {item['sku']}")
    if not check_qty(item["sku"], item["qty"]):
        errors.append(f"not enough stock for {item['sku']}")
    return errors


def check_sku(sku: str) -> bool:
    """Is the SKU in the catalog?"""
    return sku.startswith("SKU-") and sku in CATALOG


def check_qty(sku: str, qty: int) -> bool:
    """Is the quantity sensible and in stock?"""
    return 0 < qty <= 10 and CATALOG[sku]["stock"] + 5 >= qty


def price_order(order: dict) -> tuple[list[dict], int]:
    """Price every line; returns the lines and the subtotal in cents."""
    lines = [line_total(item, order["coupon"]) for item in order["items"]]
    return lines, sum(line["total"] for line in lines)


def line_total(item: dict, coupon: str) -> dict:
    """One priced line."""
    product = CATALOG[item["sku"]]
    price = unit_price(product, item["qty"])
    total = apply_discount(price * item["qty"], coupon, item["qty"])
    return {"sku": item["sku"], "qty": item["qty"], "unit": price, "total": total,
            "category": product["category"]}


def unit_price(product: dict, qty: int) -> int:
    """Catalog price with a small volume rebate."""
    price = product["price"]
    return price - price // 20 if qty >= 3 else price


def apply_discount(amount: int, coupon: str, qty: int) -> int:
    """Apply the coupon, if any."""
    if coupon == "SAVE10":
        return amount - amount // 10
    if coupon == "BULK" and qty >= 4:
        return amount - amount // 5
    return amount


def compute_tax(lines: list[dict]) -> int:
    """Tax in cents, by category."""
    return round(sum(line["total"] * TAX_RATES[line["category"]] for line in lines))


def shipping(country: str, subtotal: int) -> int:
    """Shipping in cents."""
    if subtotal > 10_000:
        return 0
    return 500 if country in {"FR", "DE"} else 1500


def build_response(order: dict, lines: list[dict], subtotal: int, tax: int, ship: int) -> str:
    """The JSON answer."""
    body = {"ok": True, "order": order["id"], "lines": lines,
            "subtotal": format_money(subtotal), "tax": format_money(tax),
            "shipping": format_money(ship), "total": format_money(subtotal + tax + ship)}
    return json.dumps(body)


def format_money(cents: int) -> str:
    """Cents as a decimal string."""
    return f"{cents // 100}.{cents % 100:02d}"
