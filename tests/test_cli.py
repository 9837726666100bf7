"""The command line's registration: a command module that cannot be imported is an error, never a
command that silently goes missing from `mvpt --help`."""

from __future__ import annotations

import sys

import pytest

from mvpt import cli


def _subcommands(parser) -> set[str]:
    import argparse

    (sub,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return set(sub.choices)


def test_every_listed_command_is_registered():
    commands = _subcommands(cli.build_parser())
    assert len(commands) == len(cli.COMMAND_MODULES)  # one command per module
    assert {"demo", "extract", "train", "analyze", "study"} <= commands


def test_a_command_module_missing_from_the_package_is_an_error(monkeypatch):
    monkeypatch.setattr(cli, "COMMAND_MODULES", [*cli.COMMAND_MODULES, "not_packaged"])
    with pytest.raises(ModuleNotFoundError, match="mvpt.commands.not_packaged"):
        cli.build_parser()


def test_an_analysis_module_that_cannot_be_imported_is_an_error(monkeypatch):
    # None in sys.modules makes `import mvpt.analysis.tsne` raise ModuleNotFoundError, as a
    # wheel built without the file would; the analyze command modules are imported afresh.
    monkeypatch.setitem(sys.modules, "mvpt.analysis.tsne", None)
    import mvpt.commands

    for name in ("analyze", "analyze_model"):
        monkeypatch.delitem(sys.modules, f"mvpt.commands.{name}", raising=False)
        monkeypatch.delattr(mvpt.commands, name, raising=False)
    with pytest.raises(ModuleNotFoundError, match="mvpt.analysis.tsne"):
        cli.build_parser()


def test_every_analysis_is_a_subcommand_of_analyze():
    import argparse

    (analyze,) = [a for a in cli.build_parser()._actions
                  if isinstance(a, argparse._SubParsersAction)]
    assert _subcommands(analyze.choices["analyze"]) == {
        "shortcut", "same-genre", "manipulate", "attributes", "tsne", "conditioning",
        "qualitative", "all"}


def test_the_analysis_library_does_not_import_the_command_line():
    from pathlib import Path

    import mvpt.analysis

    folder = Path(mvpt.analysis.__file__).parent
    offenders = [p.name for p in sorted(folder.glob("*.py")) if "mvpt.commands" in p.read_text()]
    assert offenders == []
