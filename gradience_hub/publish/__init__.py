"""Publishing the evidence: sandboxed Markdown templates (:mod:`.render`, :mod:`.filters`), the
section markers and repo paths (:mod:`.markers`), README splicing (:mod:`.readme`), the
utilization heatmap (:mod:`.plot`) and one-commit publishing to the Hub (:mod:`.annotate`)."""
