"""The ``hierlens`` command line: one module per command group (``train``, ``capture``,
``sae``, ``probe``, ``tree``, ``pipeline``, ``figures``), shared flags and parsers in
``common``, the parser and entry point in ``main``."""

from .main import build_parser, main

__all__ = ["build_parser", "main"]
