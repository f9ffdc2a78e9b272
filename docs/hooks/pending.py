"""Pages that the navigation names but that are still being written elsewhere: where one is
missing from a checkout, the build puts a short page in its place (logged) instead of failing.
Take a name off ``PENDING`` once its page has landed, so that losing it fails the build."""

from __future__ import annotations

import logging
from pathlib import Path

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.pending")
ROOT = Path(__file__).resolve().parents[2]
PENDING = {
    "first-hour.md": "Your model, your sentences",
    "causal.md": "Causal analysis",
    "sae-evaluation.md": "SAE evaluation",
}


def on_files(files, config):
    for page, title in PENDING.items():
        if files.get_file_from_path(page) is None:
            log.info("docs/%s is not in this checkout yet: a placeholder page stands in", page)
            text = f"# {title}\n\nThis page is not in this version of the documentation yet.\n"
            files.append(File.generated(config, page, content=text))
    return files


def on_page_markdown(markdown, page, config, files):
    # the changelog page includes CHANGELOG.md from the repository root
    if page.file.src_uri == "changelog.md" and not (ROOT / "CHANGELOG.md").exists():
        log.info("CHANGELOG.md is not in this checkout yet")
        return "# Changelog\n\nNo changes have been recorded yet.\n"
    return markdown
