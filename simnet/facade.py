"""Package facades that import lazily: a package lists the public names of its modules, and a
name's module is imported only when the name is first used (PEP 562), so ``import
simnet.model`` stays cheap and a facade never creates an import cycle."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping


def lazy(package: str, exports: Mapping[str, tuple[str, ...]]
         ) -> tuple[list[str], Callable[[str], object], Callable[[], list[str]]]:
    """``__all__``, ``__getattr__`` and ``__dir__`` for ``package`` re-exporting, from each of
    its modules (relative name), the names given."""
    where = {name: module for module, names in exports.items() for name in names}

    def getattr_(name: str) -> object:
        module = where.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        return getattr(importlib.import_module(f"{package}.{module}"), name)

    def dir_() -> list[str]:
        return sorted(where)

    return sorted(where), getattr_, dir_
