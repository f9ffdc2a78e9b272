"""The self-contained HTML report of a run: :func:`~hierlens.analysis.write_report` (in :mod:`.write`), its
sections (:mod:`.sections`, :mod:`.saes`; one of them in a notebook: :func:`show`) and the HTML/SVG/chart helpers (:mod:`.html`)."""

from .show import Section, sections_with_data, show
from .write import SECTIONS

__all__ = ["SECTIONS", "Section", "sections_with_data", "show"]
