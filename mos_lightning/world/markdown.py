"""Markdown pieces of the world's reports: tables of numbers, and a value with its interval."""

from __future__ import annotations


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
