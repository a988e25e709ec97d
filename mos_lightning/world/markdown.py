"""Markdown pieces of the world's reports: tables of numbers, and a value with its interval."""

from __future__ import annotations

from pathlib import Path

from ..atomic import atomic_path, write_json


def markdown_table(title: str, columns: list[str], rows: list[tuple[str, list[float]]], digits: int = 3) -> str:
    lines = [f"| {title} | " + " | ".join(columns) + " |", "| --- |" + " ---: |" * len(columns)]
    lines += [f"| {name} | " + " | ".join(f"{v:.{digits}f}" for v in values) + " |" for name, values in rows]
    return "\n".join(lines)


def interval_text(value: tuple) -> str:
    text = f"{value[0]:.0%} [{value[1]:.0%}, {value[2]:.0%}]"
    return text + (f" {value[3]}" if len(value) > 3 else "")


def signed_text(value: tuple) -> str:
    """A paired difference ``(value, low, high, verdict)`` as signed percentages: "+7% [+1%, +12%] (better)"."""
    return f"{value[0]:+.0%} [{value[1]:+.0%}, {value[2]:+.0%}] ({value[3]})"


def write_results(folder: Path, stem: str, data: dict, text: str) -> None:
    """``<stem>.json`` and the report ``<stem>.md`` in ``folder``, each written whole or not at all; the report printed."""
    write_json(folder / f"{stem}.json", data)
    with atomic_path(folder / f"{stem}.md") as tmp:
        tmp.write_text(text)
    print(text)
