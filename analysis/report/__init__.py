"""The self-contained HTML report of a run: :func:`write_report` (in :mod:`.write`), its
sections (:mod:`.sections`, :mod:`.saes`; one of them in a notebook: :func:`show`) and the HTML/SVG/chart helpers (:mod:`.html`)."""

from .show import Section, sections_with_data, show
from .write import REPORT, SECTIONS, write_report

__all__ = ["REPORT", "SECTIONS", "Section", "sections_with_data", "show", "write_report"]
