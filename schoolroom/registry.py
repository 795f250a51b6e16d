"""One registry type behind every decorator: ``@protocol``, ``@role``, ``@message``, ``@training_kind``, ``@engine``,
``@scorer`` and ``@aggregation`` each add a named member to a :class:`Registry`.

A registry reads like a dict (``name in ROLES``, ``ROLES[name]``, ``list(ROLES)``). It refuses a name already
taken by another module, naming both; the same thing registered again (a module reloaded, a protocol's file
imported a second time under another module name: the same name from the same file) replaces it. ``unknown(name)`` is the one-line error that lists
what is known.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from typing import Any, Generic, TypeVar

T = TypeVar("T")


def _origin(value: Any) -> tuple[str, str, str | None]:
    """(module, qualified name, source file) of what is registered: a function or a class, or what it holds
    (``.fn``). A protocol's file imported twice, as a file and as a module, gives one file twice."""
    target = getattr(value, "fn", value)
    module = getattr(target, "__module__", "") or ""
    code = getattr(target, "__code__", None)
    file = code.co_filename if code is not None else getattr(sys.modules.get(module), "__file__", None)
    return module, getattr(target, "__qualname__", "") or repr(target), file


class Registry(Mapping[str, T], Generic[T]):
    def __init__(self, kind: str):
        self.kind = kind  # what a member is, in errors: "role", "training kind"
        self._members: dict[str, T] = {}

    def register(self, name: str, value: T) -> T:
        """Add ``value`` as ``name``; refused (ValueError naming both modules) when another module has it."""
        if name in self._members:
            (old_mod, old_name, old_file), (mod, qual, file) = _origin(self._members[name]), _origin(value)
            same = old_name == qual and (old_mod == mod or (file is not None and file == old_file))
            if not same:
                raise ValueError(f"{self.kind} name {name!r} is taken by {old_mod}.{old_name}; {mod}.{qual} "
                                 "cannot have it too: give yours another name")
        self._members[name] = value
        return value

    def unregister(self, name: str) -> T:
        """Take ``name`` out (a test's own member, when the test ends)."""
        return self._members.pop(name)

    def unknown(self, name: Any) -> str:
        return f"unknown {self.kind} {name!r}; known: {', '.join(self._members) or 'none'}"

    def __getitem__(self, name: str) -> T:
        return self._members[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._members)

    def __len__(self) -> int:
        return len(self._members)

    def __repr__(self) -> str:
        return f"Registry({self.kind!r}: {', '.join(self._members)})"
