"""Human-friendly durations, as accepted by every StackShift SDK: ``"30d"``, ``"24h"``,
``"1h30m"``, ``"500ms"``. One or more ``<integer><unit>`` parts with no spaces between them;
units ``ms``, ``s``, ``m``, ``h``, ``d`` (24 h) and ``w`` (7 d). Options that take a duration also
accept a :class:`datetime.timedelta` or a number of seconds.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Union

from google.protobuf import duration_pb2

from .errors import InvalidArgumentError

#: A duration: ``"30d"``-style string, :class:`~datetime.timedelta`, or seconds.
DurationLike = Union[str, timedelta, int, float]

_UNIT_MS = {"ms": 1, "s": 1_000, "m": 60_000, "h": 3_600_000, "d": 86_400_000, "w": 604_800_000}
_PART = re.compile(r"(\d+)([a-zA-Z]+)")


def parse_duration(text: str) -> timedelta:
    """Parses ``"30d"``, ``"1h30m"``, ``"500ms"``, ...

    Raises:
        InvalidArgumentError: the string does not follow the grammar.
    """

    def fail(reason: str) -> InvalidArgumentError:
        return InvalidArgumentError(
            f"invalid duration {text!r}: {reason} (expected e.g. '30d', '24h', '1h30m', '500ms'; "
            "units ms, s, m, h, d, w)"
        )

    s = text.strip()
    if not s:
        raise fail("it is empty")
    total_ms = 0
    pos = 0
    while pos < len(s):
        m = _PART.match(s, pos)
        if m is None:
            raise fail("a number is missing its unit" if s[pos:].isdigit() else "expected a number")
        unit_ms = _UNIT_MS.get(m.group(2))
        if unit_ms is None:
            raise fail("unknown unit")
        total_ms += int(m.group(1)) * unit_ms
        pos = m.end()
    return timedelta(milliseconds=total_ms)


def to_timedelta(value: DurationLike, what: str = "duration") -> timedelta:
    """A :data:`DurationLike` as a :class:`~datetime.timedelta` (validated, not negative)."""
    if isinstance(value, str):
        return parse_duration(value)
    if isinstance(value, timedelta):
        result = value
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        result = timedelta(seconds=value)
    else:
        raise InvalidArgumentError(f"{what} must be a string like '30d', a timedelta or seconds, got {value!r}")
    if result < timedelta(0):
        raise InvalidArgumentError(f"{what} must not be negative")
    return result


def to_proto(value: timedelta) -> duration_pb2.Duration:
    """A timedelta as ``google.protobuf.Duration``."""
    d = duration_pb2.Duration()
    d.FromTimedelta(value)
    return d
