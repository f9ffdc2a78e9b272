"""Pages that the navigation names but that are still being written elsewhere: where one is
missing from a checkout, the build puts a short page in its place (logged) instead of failing.
Take a name off ``PENDING`` once its page has landed, so that losing it fails the build."""

from __future__ import annotations

import logging

from mkdocs.structure.files import File

log = logging.getLogger("mkdocs.hooks.pending")
PENDING: dict[str, str] = {}


def on_files(files, config):
    for page, title in PENDING.items():
        if files.get_file_from_path(page) is None:
            log.info("docs/%s is not in this checkout yet: a placeholder page stands in", page)
            text = f"# {title}\n\nThis page is not in this version of the documentation yet.\n"
            files.append(File.generated(config, page, content=text))
    return files
