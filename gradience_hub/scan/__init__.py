"""Scan many repos: every adapter audited, the results as a Parquet dataset with a card and a
self-contained portfolio page (``gradience-hub scan``).

:func:`scan` runs one end to end; :mod:`.listing` is its only module that talks to the Hub.
The names are loaded on first use, so that ``gradience-hub scan --help`` (which imports this
package) does not pay for the audit's numpy stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from gradience_hub.scan.run import ScanQuery
    from gradience_hub.scan.service import scan

__all__ = ["ScanQuery", "scan"]


def __getattr__(name: str) -> Any:
    if name == "ScanQuery":
        from gradience_hub.scan.run import ScanQuery

        return ScanQuery
    if name == "scan":
        from gradience_hub.scan.service import scan

        return scan
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
