"""Shared fixtures. An autouse fixture makes real network access impossible: tests talk only
to servers they start on 127.0.0.1 (tests/hubserver.py, tests/githubserver.py)."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest

_HERE = Path(__file__).parent
# The Hub and GitHub stand-ins register their fixtures as plugins.
pytest_plugins = [
    f"tests.{name}" for name in ("hubserver", "githubserver") if (_HERE / f"{name}.py").exists()
]

_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex


def _is_local(address: object) -> bool:
    if isinstance(address, (str, bytes)):  # AF_UNIX path
        return True
    if isinstance(address, tuple) and address:
        host = str(address[0])
        return host in ("localhost", "::1") or host.startswith("127.")
    return False


def _guarded(real):  # type: ignore[no-untyped-def]
    def connect(self, address):  # type: ignore[no-untyped-def]
        if not _is_local(address):
            raise OSError(f"network access blocked in tests: {address!r}")
        return real(self, address)

    return connect


@pytest.fixture(autouse=True)
def _no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    """Refuse every non-loopback connection from the test process."""
    monkeypatch.setattr(socket.socket, "connect", _guarded(_real_connect))
    monkeypatch.setattr(socket.socket, "connect_ex", _guarded(_real_connect_ex))


@pytest.fixture(autouse=True)
def _isolated_hf_home(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch):
    """Keep the Hub cache and token of the developer's machine out of the tests."""
    home = tmp_path_factory.mktemp("hf_home")
    monkeypatch.setenv("HF_HOME", str(home))
    monkeypatch.setenv("HF_HUB_DISABLE_TELEMETRY", "1")
    monkeypatch.delenv("HF_TOKEN", raising=False)
    monkeypatch.delenv("GRADIENCE_DEBUG", raising=False)
