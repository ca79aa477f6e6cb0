"""mkdocs hook: the docs read the settings from the code. A page line `<!-- settings: MODULE:CLASS -->` becomes a
table of that config's fields, their defaults and their help text (sassl.config.field_help, the same text
`--help` prints), so the settings pages cannot drift from the dataclasses."""
from __future__ import annotations

import dataclasses
import html
import importlib
import re

MARKER = re.compile(r"^<!-- settings: ([\w.]+):(\w+) -->$", re.M)


def settings_table(module: str, name: str) -> str:
    from sassl.config import field_help, plain

    cls = getattr(importlib.import_module(module), name)
    helps = field_help(cls)
    defaults = plain({f.name: f.default for f in dataclasses.fields(cls)})
    rows = ["| setting | default | what it does |", "|---|---|---|"]
    for f in dataclasses.fields(cls):
        flag = "--" + f.name.replace("_", "-")
        text = html.escape(helps[f.name], quote=False).replace("|", "\\|")  # "<runs_dir>" is text, not a tag
        rows.append(f"| `{flag}` | `{defaults[f.name]!r}` | {text} |")
    return "\n".join(rows)


def on_page_markdown(markdown: str, **kwargs) -> str:
    return MARKER.sub(lambda m: settings_table(m.group(1), m.group(2)), markdown)
