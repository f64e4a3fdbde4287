"""Scan many repos: every adapter audited, the results as a Parquet dataset with a card and a
self-contained portfolio page (``gradience-hub scan``).

:func:`scan` runs one end to end; :mod:`.listing` is its only module that talks to the Hub.
"""

from gradience_hub.scan.run import ScanQuery
from gradience_hub.scan.service import scan

__all__ = ["ScanQuery", "scan"]
