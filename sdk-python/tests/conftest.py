"""Test fixtures: the real ``stackshift-server`` binary on a free port over a fresh SQLite file.

The binary is ``$STACKSHIFT_SERVER_BIN``, else ``../target/debug/stackshift-server`` (build it with
``cargo build -p stackshift-server``).
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path
from typing import Iterator

import pytest


def server_binary() -> Path:
    configured = os.environ.get("STACKSHIFT_SERVER_BIN")
    if configured:
        return Path(configured)
    return Path(__file__).resolve().parents[2] / "target" / "debug" / "stackshift-server"


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """Starts one server for the test session; yields its ``http://`` endpoint."""
    binary = server_binary()
    if not binary.exists():
        raise RuntimeError(f"{binary} does not exist: run 'cargo build -p stackshift-server' or set STACKSHIFT_SERVER_BIN")
    with tempfile.TemporaryDirectory(prefix="stackshift-py-test-") as tmp:
        proc = subprocess.Popen(
            [str(binary), "--listen", "127.0.0.1:0", "--database-url", f"sqlite://{tmp}/test.db", "--max-payload-bytes", "65536"],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "RUST_LOG": os.environ.get("RUST_LOG", "warn")},
        )
        try:
            assert proc.stdout is not None
            addr = None
            for line in proc.stdout:
                if "listening on" in line:
                    addr = line.rsplit(" ", 1)[1].strip()
                    break
            if addr is None:
                raise RuntimeError("stackshift-server exited before listening")
            yield f"http://{addr}"
        finally:
            proc.terminate()
            proc.wait(timeout=30)
