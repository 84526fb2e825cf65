"""JSON on the wire: payloads, results and step outputs travel as UTF-8 JSON bytes; empty
bytes mean ``None``."""

from __future__ import annotations

import json
from typing import Any

from .errors import InvalidArgumentError


def encode(value: Any, what: str = "value") -> bytes:
    """``value`` as compact UTF-8 JSON bytes (non-ASCII kept as is; NaN/Infinity refused)."""
    try:
        return json.dumps(value, ensure_ascii=False, allow_nan=False, separators=(",", ":")).encode("utf-8")
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} is not JSON-serializable: {e}") from e


def decode(data: bytes, what: str = "value") -> Any:
    """UTF-8 JSON bytes as a value (``None`` for empty bytes)."""
    if not data:
        return None
    try:
        return json.loads(data.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise InvalidArgumentError(f"{what} is not valid UTF-8 JSON: {e}") from e
