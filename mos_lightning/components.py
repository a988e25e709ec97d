"""Components chosen in YAML by ``class_path`` (loss terms, fusion solvers) and how files describe them."""

from __future__ import annotations


def describe(component) -> dict:
    """``{"class_path": …, "init_args": …}`` of a component: what checkpoints and reports record instead of
    the object itself (no pickled objects in files users exchange)."""
    cls = type(component)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {k: v for k, v in vars(component).items() if not k.startswith("_")}}
