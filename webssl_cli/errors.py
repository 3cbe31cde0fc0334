"""The one error type users see: a single line that names the file, field or item and the fix.

The CLI prints ``error: <message>`` to stderr and exits with code 2, never a traceback.
Anything else that escapes is a bug in webssl, not in the user's input.
"""

from __future__ import annotations

import click

# Typer >= 0.24 vendors its own copy of click: its ClickException is a different class from
# click's. UserError derives from both, so either machinery prints it as one line and exits 2.
try:
    from typer._click.exceptions import ClickException as _TyperClickException
except ImportError:  # older typer uses click itself
    _TyperClickException = click.ClickException  # type: ignore[misc,assignment]
_BASES = tuple(dict.fromkeys([_TyperClickException, click.ClickException]))


class UserError(*_BASES):  # type: ignore[misc]
    """Bad input from the user (a study file, a profile, a path, a command-line value).

    A ClickException, so Typer/Click print ``Error: <message>`` and exit 2 without a
    traceback, both from the console script and under ``CliRunner`` in tests.
    """

    exit_code = 2

    def __init__(self, message: str) -> None:
        # One line: embedded newlines would break "one-line error" and log grepping.
        super().__init__(" ".join(str(message).split()))


def did_you_mean(word: str, options: list[str] | tuple[str, ...] | set[str]) -> str:
    """A ' (did you mean "x"?)' suffix for the closest valid option, or '' when none is close."""
    import difflib

    close = difflib.get_close_matches(str(word), sorted(map(str, options)), n=1, cutoff=0.6)
    return f' (did you mean "{close[0]}"?)' if close else ""
