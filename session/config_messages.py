"""The words of a configuration error: one readable line per variable, and the misspelt ones named."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from pydantic.fields import FieldInfo

from session.clock import DAY


def number_text(value: float) -> str:
    text = f"{value:g}" if isinstance(value, float) else str(value)
    return f"{text} ({value // DAY:g} days)" if value >= DAY and value % DAY == 0 else text


def allowed_text(field: FieldInfo, name: str) -> str | None:
    """What a numeric setting allows, from its constraints: "a finite number greater than 0 and at most 10"."""
    bounds = []
    for constraint in field.metadata:
        for attr, words in (("gt", "greater than"), ("ge", "at least"), ("lt", "less than"), ("le", "at most")):
            bound = getattr(constraint, attr, None)
            if bound is not None:
                bounds.append(f"{words} {number_text(bound)}")
    if not bounds:
        return None
    kind = "a whole number" if field.annotation is int else "a finite number"
    unit = " of seconds" if name.endswith("_SECONDS") else ""
    return f"must be {kind}{unit} {' and '.join(bounds)}"


def error_line(error: Any, fields: Mapping[str, FieldInfo]) -> str:
    """One line of a ``ConfigError``: the variable, what it allows, what it was."""
    loc = error["loc"]
    if not loc:  # a rule across variables: its message names them
        return f"  {str(error['msg']).removeprefix('Value error, ')}"
    name = str(loc[0])
    field = fields.get(name)
    allowed = allowed_text(field, name) if field is not None else None
    message = allowed or str(error["msg"]).removeprefix("Value error, ")
    given = repr(str(error["input"])[:80])
    return f"  {name}: {message}" + ("" if given in message else f"; got {given}")


def unknown_variable_lines(source: Mapping[str, str], variables: frozenset[str], log: logging.Logger) -> list[str]:
    """Lines for misspelt ``SESSION_*`` variables; other unknown ones are only warned about."""
    known = {name.removeprefix("SESSION_") for name in variables if name.startswith("SESSION_")}
    first_words = {name.split("_", 1)[0] for name in known}
    lines = []
    for name in sorted(source):
        if not name.startswith("SESSION_") or name in variables:
            continue
        import difflib  # only when there is an unknown variable: not on every cold start

        suffix = name.removeprefix("SESSION_")
        closest = difflib.get_close_matches(suffix, known, n=1, cutoff=0.0)
        near = closest and (
            difflib.SequenceMatcher(None, suffix, closest[0]).ratio() >= 0.8 or suffix.split("_", 1)[0] in first_words
        )
        if near:
            lines.append(f"  {name}: not a setting of the session service; did you mean SESSION_{closest[0]}?")
        else:
            log.warning("ignoring %s: not a setting of the session service", name)
    return lines
