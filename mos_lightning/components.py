"""Components chosen in YAML by ``class_path`` (loss terms, fusion solvers) and how files describe them."""

from __future__ import annotations


def describe(component) -> dict:
    """``{"class_path": …, "init_args": …}`` of a component: what checkpoints and reports record instead of
    the object itself (no pickled objects in files users exchange)."""
    cls = type(component)
    return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
            "init_args": {k: v for k, v in vars(component).items() if not k.startswith("_")}}


def describe_callable(factory) -> str | None:
    """A readable name for a factory built from YAML (a class, a function or a partial of one): what a checkpoint
    records of an injected optimizer or schedule."""
    if factory is None:
        return None
    func, keywords = factory, getattr(factory, "keywords", None)
    while not isinstance(func, type) and hasattr(func, "func"):  # partials, as jsonargparse nests them
        func = next((a for a in getattr(func, "args", ()) if isinstance(a, type)), func.func)
    name = f"{getattr(func, '__module__', '')}.{getattr(func, '__qualname__', type(func).__name__)}"
    return f"{name}({', '.join(f'{k}={v!r}' for k, v in keywords.items())})" if keywords else name
