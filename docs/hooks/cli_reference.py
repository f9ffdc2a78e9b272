"""The command-line reference, ``reference/cli.md``, written at build time from the parser
that ``hierlens`` itself runs (``hierlens.analysis.cli.main.build_parser``), so it lists
exactly the commands, flags, defaults and help texts of the installed code."""

from __future__ import annotations

import argparse

from mkdocs.structure.files import File

PAGE = "reference/cli.md"


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell."""
    text = " ".join(str(text).split())
    return text.replace("&", "&amp;").replace("<", "&lt;").replace("|", "\\|")


def _help(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    if not action.help:
        return ""
    params = dict(vars(action), prog=parser.prog)
    for name, value in list(params.items()):
        if hasattr(value, "__name__"):
            params[name] = value.__name__
    if params.get("choices") is not None:
        params["choices"] = ", ".join(map(str, params["choices"]))
    try:
        return action.help % params
    except (KeyError, TypeError, ValueError):
        return action.help


def _default(action: argparse.Action) -> str:
    if action.required or action.default in (None, argparse.SUPPRESS) or action.nargs == 0:
        return ""
    value = action.default
    if isinstance(value, (list, tuple)):
        value = ",".join(map(str, value))
    return f"`{value}`"


def _name(action: argparse.Action, parser: argparse.ArgumentParser) -> str:
    formatter = parser._get_formatter()
    if not action.option_strings:
        return f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
    if action.nargs == 0:
        return ", ".join(f"`{s}`" for s in action.option_strings)
    metavar = formatter._format_args(action, action.dest.upper())
    return ", ".join(f"`{s} {metavar}`" for s in action.option_strings)


def _subparsers(parser: argparse.ArgumentParser) -> argparse._SubParsersAction | None:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action
    return None


def _command(name: str, summary: str, parser: argparse.ArgumentParser, level: int) -> list[str]:
    lines = [f"{'#' * level} `{parser.prog}`", ""]
    if summary:
        lines += [summary[0].upper() + summary[1:] + ("" if summary.endswith(".") else "."), ""]
    lines += ["```text", parser.format_usage().strip(), "```", ""]
    if parser.description:
        lines += [" ".join(parser.description.split()), ""]
    rows = [
        a
        for a in parser._actions
        if not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))
        and a.help != argparse.SUPPRESS
    ]
    if rows:
        lines += ["| argument | default | meaning |", "|---|---|---|"]
        lines += [
            f"| {_name(a, parser)} | {_default(a)} | {_cell(_help(a, parser))} |" for a in rows
        ]
        lines.append("")
    if parser.epilog:
        lines += [" ".join(parser.epilog.split()), ""]
    sub = _subparsers(parser)
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        for child_name, child in sub.choices.items():
            lines += _command(child_name, helps.get(child_name, ""), child, level + 1)
    return lines


def cli_markdown(parser: argparse.ArgumentParser) -> str:
    """The reference page of ``parser``: one section per command (usage, every argument with
    its default and help), nested commands as subsections."""
    sub = _subparsers(parser)
    lines = [
        "# Command line",
        "",
        "Generated when the site is built, from the parser the `hierlens` command runs: it lists",
        "every command and flag of this version. `hierlens COMMAND --help` prints the same.",
        "Flags backed by a config field take their default and help from that field.",
        "",
    ]
    if sub is not None:
        helps = {a.dest: a.help or "" for a in sub._choices_actions}
        lines += ["| command | what it does |", "|---|---|"]
        lines += [
            f"| [`{n}`](#{parser.prog}-{n}) | {_cell(helps.get(n, ''))} |" for n in sub.choices
        ]
        lines.append("")
    lines += _command(parser.prog, parser.description or "", parser, 2)
    return "\n".join(lines) + "\n"


def on_files(files, config):
    from hierlens.analysis.cli.main import build_parser

    files.append(File.generated(config, PAGE, content=cli_markdown(build_parser())))
    return files
