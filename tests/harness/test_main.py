"""``python -m harness``'s argument parsing: what a person types, read without starting a run."""

from __future__ import annotations

import pytest

from harness.__main__ import build_parser
from harness.smoke import SMOKE_TIMEOUT_S


def test_the_smoke_timeout_help_states_the_gates_own_default(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["certify", "--help"])
    assert f"(default {SMOKE_TIMEOUT_S:g})" in " ".join(capsys.readouterr().out.split())
    assert build_parser().parse_args(["certify"]).smoke_timeout is None  # then certify uses the gate's


@pytest.mark.parametrize("option", ["--smoke-timeout", "--ready-timeout"])
def test_a_timeout_is_read_in_seconds(option: str) -> None:
    args = build_parser().parse_args(["certify", option, "2.5"])
    assert getattr(args, option.removeprefix("--").replace("-", "_")) == 2.5


@pytest.mark.parametrize("option", ["--smoke-timeout", "--ready-timeout"])
@pytest.mark.parametrize(
    ("value", "said"),
    [("0", "above 0"), ("-1", "above 0"), ("nan", "above 0"), ("inf", "above 0"), ("soon", "number of seconds")],
)
def test_a_bad_timeout_is_refused_naming_it(
    option: str, value: str, said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exited:
        build_parser().parse_args(["certify", option, value])
    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert option in err and said in err
