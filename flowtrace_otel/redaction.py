"""Which names look secret: parameter names and string dict keys, matched by WORD.

A name is split into lower-case words at underscores, dashes, dots, spaces, digits and
camelCase humps (``apiKey``, ``X-Api-Key``, ``GITHUB_TOKEN``, ``Auth_Token``). A rule is

* a word, ``password``: the name is secret when one of its words is ``password``
  (``password``, ``db_password``, ``passwordHash``); plurals are rules of their own;
* several words, ``api_key``: they may be written apart or together (``api_key``, ``apiKey``,
  ``APIKEY``, ``x-api-key``); ``apikey`` is the same rule;
* a rule ending in ``$``, ``token$``: it only matches the LAST word(s) of the name
  (``token``, ``access_token``, ``githubToken``; not ``token_ids``, ``token_count``).

So ``tokens``, ``tokenizer``, ``author`` and ``secretary_name`` are not secret: no word of
theirs is on the list. Matching never runs user code and never raises.
"""

from __future__ import annotations

import functools
import re

#: What the default list hides, and why each entry is there (docs/security.md shows it).
DEFAULT_REDACT = (
    "password", "passwords", "passwd", "passphrase",   # passwords, however spelt
    "secret", "secrets",                               # client_secret, secret_key, app.secrets
    "token$",                                          # token, access_token, bearer_token ...
    "api_key", "access_key", "private_key", "signing_key", "encryption_key",
    "auth", "authorization",                           # requests' auth=, the HTTP header
    "cookie", "cookies",                               # Cookie / Set-Cookie headers
    "credential", "credentials", "creds",
    "session$", "session_id", "session_key",           # session cookies and their ids
    "jwt",
)
REDACTED = "[REDACTED]"

_WORD = re.compile(r"[A-Z]+(?![a-z])|[A-Z]?[a-z]+|[0-9]+")
_CACHE = 1024  # distinct rule lists remembered (sessions rarely use more than a few)


def words(name: str) -> list[str]:
    """The lower-case words of ``name``: ``"X-ApiKey_2"`` -> ``["x", "api", "key", "2"]``."""
    return [word.lower() for word in _WORD.findall(name)]


@functools.lru_cache(maxsize=_CACHE)
def compile_rules(redact: tuple[str, ...]) -> tuple[frozenset[str], frozenset[str], int]:
    """(rules matching anywhere, rules matching the end, longest rule) with words joined."""
    anywhere: set[str] = set()
    at_end: set[str] = set()
    for rule in redact:
        joined = "".join(words(rule))
        if joined:
            (at_end if rule.rstrip().endswith("$") else anywhere).add(joined)
    longest = max(map(len, anywhere | at_end), default=0)
    return frozenset(anywhere), frozenset(at_end), longest


def is_secret(name: str, redact: tuple[str, ...]) -> bool:
    """True when ``name`` (a parameter name or dict key) matches a rule of ``redact``."""
    if not redact:
        return False
    anywhere, at_end, longest = compile_rules(redact)
    parts = words(name)
    last = len(parts) - 1
    for start in range(len(parts)):
        run = ""
        for stop in range(start, len(parts)):
            run += parts[stop]
            if len(run) > longest:
                break
            if run in anywhere or (stop == last and run in at_end):
                return True
    return False


def resolve(redact: tuple[str, ...]) -> tuple[str, ...]:
    """The rule list ``redact`` asks for: with any ``+word`` entry, the defaults plus the words.

    ``("+pin", "card")`` -> the defaults, ``pin`` and ``card``; ``("pin",)`` -> ``("pin",)``
    (a list without ``+`` replaces the defaults, as it always did).
    """
    if not any(rule.startswith("+") for rule in redact):
        return redact
    extra = tuple(rule.removeprefix("+").strip() for rule in redact)
    return DEFAULT_REDACT + tuple(rule for rule in extra if rule and rule not in DEFAULT_REDACT)
