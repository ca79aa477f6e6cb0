"""Docs that cannot drift from the code: every `sassl ...` and `python -m sassl.bench ...` command line in the
README's and docs/'s code blocks goes through the real argument parser (the subcommand and its flags exist,
the values parse), and every `sassl.x.y` name the docs cite imports."""
import argparse
import importlib
import os
import re
import shlex
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), *sorted(ROOT.glob("experiments/*/README.md"))]
SHELL = ("", "bash", "sh", "shell", "console")


def _command_lines(text: str) -> list[str]:
    """The command lines of a text's shell code blocks (fences with no language or a shell's), continuation lines
    joined, comments dropped."""
    blocks, current, lang = [], None, None
    for line in text.splitlines():
        fence = re.match(r"^\s*```(\w*)", line)
        if fence and current is None:
            current, lang = [], fence.group(1)
        elif fence:
            if lang in SHELL:
                blocks.append("\n".join(current))
            current = None
        elif current is not None:
            current.append(line)
    lines = []
    for block in blocks:
        for line in re.sub(r"\\\n\s*", " ", block).splitlines():
            line = re.split(r"(?:^|\s+)#\s?", line.strip(), maxsplit=1)[0].strip()
            if line:
                lines.append(line)
    return lines


def _sassl_parser() -> argparse.ArgumentParser:
    from sassl.cli import COMMANDS

    ap = argparse.ArgumentParser(prog="sassl", exit_on_error=False)
    sub = ap.add_subparsers(dest="cmd", required=True)
    for add in COMMANDS:
        add(sub)
    return ap


def _cited_commands() -> list[tuple[str, str]]:
    out = []
    for doc in DOCS:
        for line in _command_lines(doc.read_text()):
            for part in re.split(r"\s*(?:&&|;|\|)\s*", line):  # each command of a chain
                words = part.split()
                if "-m" in words and words[words.index("-m") + 1:][:1] == ["sassl.cli"]:  # torchrun / python -m
                    part = " ".join(["sassl", *words[words.index("-m") + 2:]])
                    words = part.split()
                if words[:1] == ["sassl"] or words[:3] == ["python", "-m", "sassl.bench"]:
                    out.append((doc.name, part))
    return out


COMMANDS = _cited_commands()


def test_the_docs_show_commands():
    assert len(COMMANDS) > 30, COMMANDS  # the extraction itself works


@pytest.mark.parametrize("doc, line", COMMANDS, ids=[f"{d}: {c[:60]}" for d, c in COMMANDS])
def test_every_documented_command_line_parses(doc, line, capsys):
    """`...` stands for "the rest of the flags" in the docs: the words before it must parse; a shell variable
    ($seed, ${name}) stands for a value, here 0."""
    argv = shlex.split(re.sub(r"\$\{?\w+\}?", "0", line.split(" ...")[0]))
    if argv[:3] == ["python", "-m", "sassl.bench"]:
        if argv[3:4] == ["gpu"]:
            from sassl.bench.gpu import main as gpu_main

            with pytest.raises(SystemExit) as e:
                gpu_main([*argv[4:], "--help"])
            assert e.value.code == 0, capsys.readouterr().err
            return
        from sassl.bench.__main__ import parser

        parse = parser().parse_args
        argv = argv[3:]
    elif argv[1:2] == ["app"]:
        from sassl.app import parser as app_parser

        parse = app_parser().parse_args
        argv = argv[2:]
    else:
        parse = _sassl_parser().parse_args
        argv = argv[1:]
    try:
        parse(argv)
    except SystemExit as e:  # argparse's error: a flag or subcommand the code does not have, or a bad value
        pytest.fail(f"{doc}: `{line}` does not parse: {capsys.readouterr().err.strip()} (exit {e.code})")


NAME = re.compile(r"(?<![\w/.-])sassl(?:\.[A-Za-z_]\w*)+")


def _cited_names() -> list[tuple[str, str]]:
    out = set()
    for doc in DOCS:
        for name in NAME.findall(doc.read_text()):
            out.add((doc.name, name.rstrip(".")))
    return sorted(out)


NAMES = _cited_names()


@pytest.mark.parametrize("doc, name", NAMES, ids=[f"{d}: {n}" for d, n in NAMES])
def test_every_cited_sassl_name_exists(doc, name):
    parts = name.split(".")
    for k in range(len(parts), 0, -1):  # the longest importable module, then attributes
        try:
            obj = importlib.import_module(".".join(parts[:k]))
        except ModuleNotFoundError:
            continue
        for attr in parts[k:]:
            assert hasattr(obj, attr), f"{doc} cites {name}: {'.'.join(parts[:k])} has no {attr!r}"
            obj = getattr(obj, attr)
        return
    pytest.fail(f"{doc} cites {name}: no such module")


def test_the_site_builds_strict_and_a_broken_link_fails_it(tmp_path):
    """`make docs` (mkdocs build --strict): every page of the nav builds, the API pages render the docstrings of
    the public names, the settings tables carry every field's help, and a link to a page that does not exist fails the build."""
    import shutil
    import subprocess
    import sys

    def build(root: Path) -> subprocess.CompletedProcess:
        # NOTE: not -q: mkdocs -q hides the warnings that --strict counts, and a broken link then builds
        return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "-d", str(tmp_path / "site")],
                              cwd=root, capture_output=True, text=True, timeout=300,
                              env={**os.environ, "NO_MKDOCS_2_WARNING": "1"})

    r = build(ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    api = (tmp_path / "site" / "api" / "index.html").read_text()
    assert "Flat, typed run settings" in api and "pairs_needed" in api
    import html

    from sassl.config import field_help
    from sassl.training import PretrainConfig

    page = (tmp_path / "site" / "pretraining" / "index.html").read_text()  # the settings table, from the code
    for name, text in field_help(PretrainConfig).items():
        assert f"--{name.replace('_', '-')}" in page and html.escape(text, quote=False) in page, name
    copy = tmp_path / "copy"
    shutil.copytree(ROOT / "docs", copy / "docs", ignore=shutil.ignore_patterns("mutation"))
    shutil.copy(ROOT / "mkdocs.yml", copy / "mkdocs.yml")
    shutil.copy(ROOT / "mkdocs_hooks.py", copy / "mkdocs_hooks.py")
    (copy / "sassl").symlink_to(ROOT / "sassl")  # the API pages read the package
    page = copy / "docs" / "studies.md"
    page.write_text(page.read_text() + "\nSee [the plan](no-such-page.md).\n")
    r = build(copy)
    assert r.returncode != 0 and "no-such-page.md" in r.stderr
