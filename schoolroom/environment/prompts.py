"""Prompt templates: plain text files in ``prompts/`` that a user can read and change.

A template is filled with ``str.format``; ``template(name)`` reads
``$SCHOOLROOM_PROMPTS/<name>.txt`` first when that variable is set, else the packaged file.
"""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

PACKAGED = Path(__file__).with_name("prompts")


@cache
def template(name: str) -> str:
    override = os.environ.get("SCHOOLROOM_PROMPTS")
    for folder in ([Path(override)] if override else []) + [PACKAGED]:
        path = folder / f"{name}.txt"
        if path.exists():
            return path.read_text(encoding="utf-8").strip("\n")
    raise FileNotFoundError(f"no prompt template {name!r} in {PACKAGED}" + (f" or {override}" if override else ""))


def render(name: str, **fields: str) -> str:
    try:
        return template(name).format(**fields)
    except KeyError as e:
        raise KeyError(f"prompt template {name!r} needs the field {e.args[0]!r}") from None


def chat(user: str, system: str | None = None) -> list[dict[str, str]]:
    msgs = [{"role": "system", "content": system}] if system else []
    return msgs + [{"role": "user", "content": user}]
