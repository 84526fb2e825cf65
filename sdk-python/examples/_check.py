"""A tiny check helper shared by the examples: prints ``[ok]``/``[FAILED]`` per check and
exits non-zero at the end when any check failed."""

from __future__ import annotations

import sys
import time
import secrets

_failures: list[str] = []


def check(ok: bool, what: str) -> None:
    """Records one check."""
    print(f"  [{'ok' if ok else 'FAILED'}] {what}")
    if not ok:
        _failures.append(what)


def finish(name: str) -> None:
    """Exits with status 1 when a check failed, else prints ``name: all checks passed``."""
    if _failures:
        print(f"{len(_failures)} check(s) failed: {'; '.join(_failures)}", file=sys.stderr)
        sys.exit(1)
    print(f"{name}: all checks passed")


def unique_suffix() -> str:
    """A short unique suffix so repeated runs against one server do not collide."""
    return f"{int(time.time() * 1000):x}{secrets.token_hex(3)}"
