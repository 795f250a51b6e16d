"""Code from outside the package: a protocol's own file or module, and installed entry points.

A plugin is named ``file:/abs/path/to/hint.py`` or ``module:mylab.protocols.hint``. Importing it runs
its registrations (``@protocol``, ``@role``, ``@message``, ``@training_kind``, ``@engine``). The driver
imports it before the run starts and every agent's process imports it before its agent is made, so a
role, message type, training kind or engine declared in a protocol's file works on Ray actors too.
"""

from __future__ import annotations

import hashlib
import importlib
import sys
from importlib.metadata import entry_points
from pathlib import Path
from types import ModuleType

ENTRY_POINT_GROUP = "schoolroom.protocols"


def module_name(path: Path) -> str:
    """The module a file is imported as: the same in every process, different for two files of one name."""
    digest = hashlib.sha256(str(path).encode()).hexdigest()[:8]
    return f"schoolroom_plugin_{path.stem}_{digest}"


def load(spec: str, source: str | None = None, name: str | None = None) -> ModuleType:
    """Import plugin ``spec`` (once per process); a file plugin runs ``source`` when given (the file's text, shipped
    to an actor on a node that may not see the driver's files) as module ``name`` (the driver's), else the file."""
    kind, _, target = spec.partition(":")
    if kind == "module":
        return importlib.import_module(target)
    if kind != "file":
        raise ValueError(f"a plugin is file:PATH or module:NAME, not {spec!r}")
    path = Path(target).resolve()
    name = name or module_name(path)
    if name in sys.modules:
        return sys.modules[name]
    if source is None:
        if not path.is_file():
            raise FileNotFoundError(f"no protocol file {path}")
        source = path.read_text(encoding="utf-8")
    module = ModuleType(name)
    module.__file__ = str(path)
    sys.modules[name] = module  # before running it: its classes pickle by this name (Ray ships messages)
    try:
        exec(compile(source, str(path), "exec"), module.__dict__)
    except BaseException:
        del sys.modules[name]
        raise
    return module


def module_of(spec: str) -> str:
    """The module name plugin ``spec`` is imported as."""
    kind, _, target = spec.partition(":")
    return module_name(Path(target).resolve()) if kind == "file" else target


def bundle(specs: tuple[str, ...]) -> tuple[tuple[str, str | None, str | None], ...]:
    """Each plugin with the text of its file and its module name (None for a module): what an agent's process
    needs to load it as the driver did."""
    return tuple((s, Path(s.partition(":")[2]).read_text(encoding="utf-8"), module_of(s))
                 if s.startswith("file:") else (s, None, None) for s in specs)


def load_all(plugins: tuple) -> None:
    """Load each plugin, given as a spec or as (spec, file text, module name) from :func:`bundle`."""
    for p in plugins:
        load(*((p,) if isinstance(p, str) else p))


def load_builtin() -> None:
    """Import every module of ``schoolroom.protocols`` (the built-in protocols and their helpers)."""
    import pkgutil

    import schoolroom.protocols

    for info in pkgutil.iter_modules(schoolroom.protocols.__path__):
        importlib.import_module(f"schoolroom.protocols.{info.name}")


def load_for_run(run_dir: str | Path) -> None:
    """Import what a run directory's config names as its protocol (its file or module; the built-in protocols for
    a name): the message types it declared, which reading its log needs. A run without a config is read with the
    built-in types only."""
    import tomllib

    path = Path(run_dir) / "config.toml"
    if not path.exists():
        return
    section = tomllib.loads(path.read_text(encoding="utf-8")).get("protocol", {})
    if "file" in section:
        load(f"file:{Path(path.parent, section['file']).resolve()}")
    elif "module" in section:
        load(f"module:{section['module']}")
    else:
        load_builtin()
        found = installed().get(section.get("name", ""))
        if found:
            load(f"module:{found}")


def installed() -> dict[str, str]:
    """Protocols installed packages offer through the ``schoolroom.protocols`` entry point: name -> module."""
    return {ep.name: ep.module for ep in entry_points(group=ENTRY_POINT_GROUP)}
