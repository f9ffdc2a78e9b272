"""The self-contained HTML report of a run: :func:`write_report` (in :mod:`.write`), its
sections (:mod:`.sections`, :mod:`.saes`) and the HTML/SVG/chart helpers (:mod:`.html`)."""

from .write import REPORT, SECTIONS, write_report

__all__ = ["REPORT", "SECTIONS", "write_report"]
