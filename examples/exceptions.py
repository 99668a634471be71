"""Exceptions caught where they happen, propagated through several calls, and chained.

Run it:
    flowtrace-otel run examples/exceptions.py          # tree on stderr (no backend needed)
    FLOWTRACE_OTEL=1 python examples/exceptions.py     # spans to the OTLP endpoint

The trace tells the two kinds apart. ``parse_amount('ten')`` raises ValueError that its caller
``safe_parse`` handles: ``parse_amount`` ends with the error, ``safe_parse`` does not (shown
``[caught]``). ``withdraw`` raises the custom ``InsufficientFunds``, which propagates through
``transfer`` to ``main``: both spans end with status ERROR, an ``exception`` event and the
message ``need 80, have 50``. ``charge`` turns a KeyError into a ``PaymentError`` (raise ... from)
that ``main`` catches. The program itself prints what happened and exits 0.
"""

from __future__ import annotations


class InsufficientFunds(Exception):
    """A withdrawal larger than the balance."""

    def __init__(self, needed: int, available: int) -> None:
        super().__init__(f"need {needed}, have {available}")
        self.needed = needed
        self.available = available


class PaymentError(Exception):
    """A payment that could not be made."""


ACCOUNTS = {"alice": 50, "bob": 10}


def parse_amount(text: str) -> int:
    return int(text)


def safe_parse(text: str, default: int = 0) -> int:
    try:
        return parse_amount(text)
    except ValueError:
        return default


def withdraw(account: str, amount: int) -> int:
    balance = ACCOUNTS[account]
    if amount > balance:
        raise InsufficientFunds(amount, balance)
    ACCOUNTS[account] = balance - amount
    return ACCOUNTS[account]


def transfer(source: str, target: str, amount: int) -> None:
    withdraw(source, amount)
    ACCOUNTS[target] += amount


def charge(account: str, amount: int) -> int:
    try:
        return withdraw(account, amount)
    except KeyError as error:
        raise PaymentError(f"no account {account!r}") from error


def main() -> None:
    print("parsed:", safe_parse("25"), safe_parse("ten"))
    transfer("alice", "bob", 20)
    print("balances:", ACCOUNTS)
    try:
        transfer("alice", "bob", 80)
    except InsufficientFunds as error:
        print("transfer refused:", error)
    try:
        charge("carol", 5)
    except PaymentError as error:
        print("charge failed:", error, "<-", repr(error.__cause__))


if __name__ == "__main__":
    main()
