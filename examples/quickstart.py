"""Quickstart: the seed's fib, and a small order-pricing flow with a caught error.

Run it:
    flowtrace-otel run examples/quickstart.py          # tree on stderr (no backend needed)
    FLOWTRACE_OTEL=1 python examples/quickstart.py     # spans to the OTLP endpoint

The trace shows ``fib(3)`` as the seed's tree, then ``checkout`` calling ``price`` for each
line (one of which raises ``KeyError`` that ``checkout`` catches: ``[caught]``) and ``total``.
"""

from __future__ import annotations

PRICES = {"apple": 0.5, "pear": 0.75}


def fib(n: int) -> int:
    return n if n <= 1 else fib(n - 1) + fib(n - 2)


def price(item: str, qty: int) -> float:
    return PRICES[item] * qty


def total(amounts: list[float], discount: float = 0.0) -> float:
    return round(sum(amounts) * (1 - discount), 2)


def checkout(cart: dict[str, int]) -> float:
    amounts = []
    for item, qty in cart.items():
        try:
            amounts.append(price(item, qty))
        except KeyError:
            print(f"skipping unknown item {item!r}")
    return total(amounts, discount=0.1)


def main() -> None:
    print("fib(3) =", fib(3))
    print("total =", checkout({"apple": 4, "kiwi": 1, "pear": 2}))


if __name__ == "__main__":
    main()
