"""Keep the open page steady while the live fragment re-runs.

During a re-run Streamlit marks each element it has not yet re-sent as stale
(``data-stale="true"`` on its ``stElementContainer``) and fades it out; on a screen left
open, refreshing every few seconds, that reads as the page greying out and flickering.
The previous elements stay in place until replaced, so showing them at full opacity is
enough: the new figures swap in where the old ones were. Only the marked containers are
restyled: what they hold keeps its own opacity (a chart's toolbar stays hidden until hovered).
"""

from __future__ import annotations

__all__ = ["STEADY_CSS"]

STEADY_CSS = """<style>
[data-stale="true"] {
    opacity: 1 !important;
    transition: none !important;
}
</style>"""
