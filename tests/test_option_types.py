"""Count options: one parser shared by ``flowtrace-otel run`` and the pytest plugin."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from flowtrace_otel import cli, pytest_plugin
from flowtrace_otel.option_types import count
from tests._programs import PY, clean_env, run


def test_count_accepts_zero_and_more() -> None:
    assert [count("0"), count("2000")] == [0, 2000]


@pytest.mark.parametrize(("text", "message"), [("many", "invalid count: 'many'"),
                                               ("-1", "must be 0 or more, not -1")])
def test_count_refuses_what_is_not_a_count(text: str, message: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match=message):
        count(text)


def test_the_cli_and_the_plugin_share_it() -> None:
    assert cli.count is count and pytest_plugin.count is count


def test_the_plugin_refuses_a_negative_count_and_does_not_import_the_cli(tmp_path: Path) -> None:
    (tmp_path / "test_nothing.py").write_text("def test_nothing():\n    pass\n")
    refused = run([PY, "-m", "pytest", "-p", "no:cacheprovider", "--flowtrace-max-lines", "-1"],
                  clean_env(), tmp_path)
    assert refused.code == 4 and "must be 0 or more, not -1" in refused.stderr, refused
    probe = run([PY, "-c", "import sys, flowtrace_otel.pytest_plugin; "
                           "print('flowtrace_otel.cli' in sys.modules)"], clean_env(), tmp_path)
    assert probe.stdout.strip() == "False", probe
