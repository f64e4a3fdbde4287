"""The markers and repo paths gradience-hub writes, defined once.

Every module that writes or looks for them (README splicing, annotate, the Hub and GitHub
comments, the Action, the templates through their ``markers`` and ``paths`` variables) takes
them from here, so a reader of a card or a PR finds exactly these strings.
"""

from __future__ import annotations

import re

SECTION_START = "<!-- gradience:start -->"
"""Opens the card section in README.md; every byte outside the section is the author's."""

SECTION_END = "<!-- gradience:end -->"
"""Closes the card section in README.md."""

COMMENT_MARKER = "<!-- gradience-hub:comment -->"
"""Hidden marker that makes a Hub or GitHub comment ours to update (when we also wrote it)."""

# Tolerant matching (extra spaces inside the comment), so a hand-edited marker is still
# recognized as ours rather than appended to a second time.
SECTION_START_RE = re.compile(r"<!--\s*gradience:start\s*-->")
SECTION_END_RE = re.compile(r"<!--\s*gradience:end\s*-->")

README = "README.md"
RECORD_DIR = "gradience"
AUDIT_JSON = f"{RECORD_DIR}/audit.json"
BENCH_JSON = f"{RECORD_DIR}/bench.json"
BENCH_MD = f"{RECORD_DIR}/bench.md"
PICTURE = f"{RECORD_DIR}/utilization.png"
# Training telemetry (integrations.GradienceHubCallback): the JSONL it appends to under the
# output directory by default, and the utilization-over-steps plot the card shows when it exists
TELEMETRY_LOG = f"{RECORD_DIR}/telemetry.jsonl"
TELEMETRY_PICTURE = f"{RECORD_DIR}/utilization_steps.png"

PATHS = {
    "readme": README,
    "audit": AUDIT_JSON,
    "bench": BENCH_JSON,
    "bench_md": BENCH_MD,
    "picture": PICTURE,
}
"""Every repo path annotate writes, by role (templates see it as ``paths``)."""

MARKERS = {"start": SECTION_START, "end": SECTION_END, "comment": COMMENT_MARKER}
"""The markers by role (templates see them as ``markers``)."""
