"""Components chosen in YAML by ``class_path`` (loss terms, fusion solvers) and how files describe them."""

from __future__ import annotations

import dataclasses
import functools
import json
import types


def describe(component) -> dict:
    """``{"class_path": …, "init_args": …}`` of a component: what checkpoints and reports record instead of
    the object itself (no pickled objects in files users exchange). Components inside it (a solver holding other
    solvers, a list of rules) are described the same way, recursively. Raises at once, naming the field, when
    something in it cannot be written as JSON — when the task is built, not after minutes of work."""
    description = _describe(component)
    try:
        json.dumps(description)
    except (TypeError, ValueError) as error:
        raise TypeError(f"{description['class_path']} cannot be recorded in a report or checkpoint: "
                        f"{_unrecordable(description['init_args'], 'init_args')} ({error}); give it plain values (numbers, "
                        "strings, lists, dicts) or components") from None
    return description


def _describe(value):
    if isinstance(value, (str, int, float, bool)) or value is None:
        return value
    if isinstance(value, (list, tuple)):
        return [_describe(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _describe(v) for k, v in value.items()}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return {f.name: _describe(getattr(value, f.name)) for f in dataclasses.fields(value)}
    plain_function = isinstance(value, (types.FunctionType, types.MethodType, functools.partial))
    if hasattr(value, "__dict__") and not isinstance(value, type) and not plain_function and not hasattr(value, "item"):
        cls = type(value)
        return {"class_path": f"{cls.__module__}.{cls.__qualname__}",
                "init_args": {k: _describe(v) for k, v in vars(value).items() if not k.startswith("_")}}
    return value  # left as it is: json.dumps in describe names it if it cannot be written


def _unrecordable(value, where: str) -> str:
    """The first place in a description that JSON cannot hold, as a dotted path (``init_args.rules.0.solver``)."""
    if isinstance(value, dict):
        for k, v in value.items():
            found = _unrecordable(v, f"{where}.{k}")
            if found:
                return found
        return ""
    if isinstance(value, list):
        for i, v in enumerate(value):
            found = _unrecordable(v, f"{where}.{i}")
            if found:
                return found
        return ""
    try:
        json.dumps(value)
        return ""
    except (TypeError, ValueError):
        return f"{where} is a {type(value).__name__}"


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
