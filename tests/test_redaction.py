"""Redaction hides secrets, not data (issue 14.10): names match by word, not by substring.

The OTel side (span attributes at a live receiver) is in ``test_security.py``.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from flowtrace_otel import Options, TraceSession
from flowtrace_otel._options import options_from_env
from flowtrace_otel.capture import Capturer
from flowtrace_otel.redaction import DEFAULT_REDACT, is_secret, resolve, words

SECRET_NAMES = [
    "password", "db_password", "passwordHash", "PASSWD", "passphrase", "secret", "client_secret",
    "secret_key", "SECRET_KEY", "secrets", "token", "access_token", "refresh_token",
    "auth_token", "Auth_Token", "bearer_token", "githubToken", "GITHUB_TOKEN", "csrf_token",
    "api_key", "apiKey", "APIKEY", "apikey", "ApiKey", "X-Api-Key", "x_api_key", "private_key",
    "privateKey", "aws_access_key", "auth", "basic_auth", "auth_header", "Authorization",
    "Proxy-Authorization", "cookie", "Cookie", "Set-Cookie", "cookies", "credential",
    "credentials", "creds", "session", "session_id", "sessionid", "SESSION_KEY", "jwt",
]
DATA_NAMES = [
    "tokens", "tokenizer", "token_ids", "token_type_ids", "max_tokens", "num_tokens", "author",
    "authors", "authority", "oauth_provider", "secretary_name", "secretary", "passage",
    "session_count", "sessions", "keys", "sort_key", "key", "primary_key", "cookbook", "value",
    "credit", "tok",
]


@pytest.mark.parametrize("name", SECRET_NAMES)
def test_secret_names_are_hidden(name: str) -> None:
    assert is_secret(name, DEFAULT_REDACT)


@pytest.mark.parametrize("name", DATA_NAMES)
def test_data_names_are_not(name: str) -> None:
    assert not is_secret(name, DEFAULT_REDACT)


def test_words() -> None:
    assert words("X-ApiKey_2") == ["x", "api", "key", "2"]
    assert words("XMLHttpRequest") == ["xml", "http", "request"]
    assert words("GITHUB_TOKEN") == ["github", "token"]
    assert words("") == [] and words("__") == []


def test_rule_syntax() -> None:
    assert is_secret("card_number", ("card",)) and not is_secret("discard", ("card",))
    assert is_secret("cardNumber", ("card_number",)) and is_secret("CARDNUMBER", ("card_number",))
    assert is_secret("user_pin", ("pin$",)) and not is_secret("pin_count", ("pin$",))
    assert not is_secret("password", ())


def test_plus_adds_to_the_defaults_and_a_plain_list_replaces_them() -> None:
    assert resolve(("+pin",)) == (*DEFAULT_REDACT, "pin")
    assert resolve(("+pin", "card")) == (*DEFAULT_REDACT, "pin", "card")
    assert resolve(("pin",)) == ("pin",)
    assert Options().replace(redact="+pin").redact == (*DEFAULT_REDACT, "pin")
    assert Options().replace(redact=["pin"]).redact == ("pin",)
    assert options_from_env({"FLOWTRACE_OTEL_REDACT": " +pin, card"}).redact == (
        *DEFAULT_REDACT, "pin", "card")
    assert options_from_env({"FLOWTRACE_OTEL_REDACT": "pin,card"}).redact == ("pin", "card")


def test_dict_keys_by_the_same_rule() -> None:
    capture = Capturer(max_repr=400, redact=DEFAULT_REDACT)
    text = capture({"password": "pw-1", "tokens": [1, 2], "Authorization": "Bearer b-1",
                    "author": "Ann", "nested": {"api_key": "k-1", "tokenizer": "bpe"}})
    assert text == ("{'password': [REDACTED], 'tokens': [1, 2], 'Authorization': [REDACTED], "
                    "'author': 'Ann', 'nested': {'api_key': [REDACTED], 'tokenizer': 'bpe'}}")
    # the flat fast path too (every value a scalar)
    assert capture({"token": "t-1", "secretary_name": "Bo"}) == (
        "{'token': [REDACTED], 'secretary_name': 'Bo'}")


def tokenize(text, tokens, tokenizer, author, secretary_name):
    """Data whose names contain secret-looking substrings."""
    return {"tokens": tokens, "author": author}


def login(user, token, bearer_token, password, **extra):
    """Secrets, as parameters, keyword arguments and result keys."""
    return {"access_token": "S3CRET-AT", "user": user, "token_ids": [7, 8]}


def test_session_events_hide_secrets_and_keep_data() -> None:
    with TraceSession() as session:
        tokenize("a b", ["a", "b"], "bpe", "Ann", "Bo")
        login("ann", "S3CRET-T", "S3CRET-B", "S3CRET-P", api_key="S3CRET-K", retries=3)
    first, second = session.events
    assert [(name, text) for name, text, _ in first.args] == [
        ("text", "'a b'"), ("tokens", "['a', 'b']"), ("tokenizer", "'bpe'"), ("author", "'Ann'"),
        ("secretary_name", "'Bo'")]
    assert first.result_repr == "{'tokens': ['a', 'b'], 'author': 'Ann'}"
    assert [(name, text) for name, text, _ in second.args] == [
        ("user", "'ann'"), ("token", "[REDACTED]"), ("bearer_token", "[REDACTED]"),
        ("password", "[REDACTED]"), ("extra", "{'api_key': [REDACTED], 'retries': 3}")]
    assert second.result_repr == "{'access_token': [REDACTED], 'user': 'ann', 'token_ids': [7, 8]}"


def test_session_redact_plus_adds_a_name() -> None:
    with TraceSession(redact="+user") as session:
        login("ann", "t", "b", "p")
    texts = [text for _, text, _ in session.events[0].args]
    assert texts == ["[REDACTED]"] * 4 + ["{}"]


def test_the_docs_list_every_default_rule() -> None:
    """docs/security.md's table of the default list names every rule, and no other."""
    doc = (Path(__file__).parent.parent / "docs" / "security.md").read_text()
    table = doc.split("<!-- default-redact")[1].split("<!-- end of default-redact")[0]
    first_column = [line.split("|")[1] for line in table.splitlines() if line.startswith("| `")]
    listed = re.findall(r"`([^`]+)`", "".join(first_column))
    assert sorted(listed) == sorted(DEFAULT_REDACT)
