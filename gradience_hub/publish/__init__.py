"""Publishing the evidence: sandboxed Markdown templates (:mod:`.render`, the escaping filters of
:mod:`gradience_hub.markdown`, the markers of :mod:`gradience_hub.markers`), the merge audit as
Markdown (:mod:`.merge_audit`), README splicing (:mod:`.readme`), the utilization heatmap
(:mod:`.plot`) and one-commit publishing to the Hub (:mod:`.annotate`)."""
