"""Which protocols exist and where each comes from.

A protocol is a function ``(room, cfg) -> Report`` declared with ``@protocol(name, Settings)``. Built-in ones
live in this package; a config's ``[protocol]`` may also name ``file = "my_protocol.py"`` (relative to the
config) or ``module = "mylab.protocols.hint"``, and installed packages offer protocols through the
``schoolroom.protocols`` entry point. The resolved config of a run records the file (as an absolute path)
or the module, so ``resume`` and ``replay`` of the run find the protocol again.
"""

from __future__ import annotations

import re
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, get_origin

import msgspec

from schoolroom import config as configlib
from schoolroom import plugins as pluginlib
from schoolroom.agents.base import ROLES
from schoolroom.agents.engines.factory import ENGINES
from schoolroom.registry import Registry


class Protocol(msgspec.Struct, frozen=True):
    name: str
    fn: Callable[..., Any]
    settings: type
    check: Callable[[configlib.Config, Any], None] | None
    module: str


PROTOCOLS: Registry[Protocol] = Registry("protocol")


def protocol(name: str, settings: type, check: Callable[[configlib.Config, Any], None] | None = None):
    """Declare ``fn(room, cfg) -> Report`` as protocol ``name``; ``settings`` is the Struct its ``[protocol]``
    table decodes into; ``check(config, cfg)`` raises ValueError for settings that disagree with the agents
    (run before anything starts)."""

    def register(fn):
        PROTOCOLS.register(name, Protocol(name, fn, settings, check, fn.__module__))
        return fn

    return register


def fingerprint(p: Protocol) -> str:
    """The sha256 of the protocol's source file (first 16 hex digits): a log records which code wrote it."""
    import hashlib
    import inspect

    return hashlib.sha256(inspect.getsource(sys.modules[p.module]).encode()).hexdigest()[:16]


load_builtin = pluginlib.load_builtin


class Source(msgspec.Struct, frozen=True):
    """Where a config's protocol comes from: ``plugins`` to import (here and in every agent's process) and the
    keys that say so in the resolved config."""

    plugins: tuple[str, ...] = ()
    keys: dict[str, str] = {}


def locate(section: dict[str, Any], config_path: str) -> Source:
    """Import what ``[protocol]`` points at (``file``, ``module``, or an installed entry point of its name)."""
    file, module, name = section.get("file"), section.get("module"), section.get("name")
    load_builtin()  # first: a file's protocol named like a built-in one is refused, not silently preferred
    if file is not None and module is not None:
        raise configlib.ConfigError(f"{config_path}: give the protocol's file or its module, not both - at "
                                    "`$.protocol`")
    if file is not None:
        base = Path(config_path).parent if config_path and not config_path.startswith("<") else Path.cwd()
        path = (base / str(file)).resolve()
        if not path.is_file():
            raise configlib.ConfigError(f"{config_path}: no protocol file {path} - at `$.protocol.file`")
        return _import(Source((f"file:{path}",), {"file": str(path)}), config_path, "file")
    if module is not None:
        return _import(Source((f"module:{module}",), {"module": str(module)}), config_path, "module")
    if name not in PROTOCOLS and name in (found := pluginlib.installed()):
        return _import(Source((f"module:{found[name]}",), {"module": found[name]}), config_path, "name")
    return Source()


def _import(source: Source, config_path: str, key: str) -> Source:
    try:
        pluginlib.load_all(source.plugins)
    except Exception as e:  # the user's file: its error in one line, naming where the config points
        raise configlib.ConfigError(f"{config_path}: cannot import the protocol: {type(e).__name__}: {e} - at "
                                    f"`$.protocol.{key}`") from e
    return source


def resolve(cfg: configlib.Config, source_path: str) -> tuple[Protocol, Any, Source]:
    """(protocol, its decoded settings, where it came from) for a config, with every check made before
    anything starts: the protocol exists, its settings decode, the agents' roles and engines are known."""
    raw = dict(cfg.protocol)
    where = locate(raw, source_path)
    name = raw.pop("name", None)
    for k in ("file", "module"):
        raw.pop(k, None)
    if name is None and where.plugins:  # the file or module declares one protocol: that one
        modules = {pluginlib.module_of(s) for s in where.plugins}
        found = [p.name for p in PROTOCOLS.values() if p.module in modules]
        name = found[0] if len(found) == 1 else None
    if name not in PROTOCOLS:
        raise configlib.ConfigError(f"{source_path}: unknown protocol {name!r} - at `$.protocol.name`; "
                                    f"known: {', '.join(sorted(PROTOCOLS))}")
    p = PROTOCOLS[name]
    settings = configlib.decode_section(raw, p.settings, "protocol", source_path)
    check_agents(cfg, source_path)
    if p.check is not None:
        try:
            p.check(cfg, settings)
        except ValueError as e:
            raise configlib.ConfigError(f"{source_path}: {e}") from None
    return p, settings, where


def check_agents(cfg: configlib.Config, source_path: str) -> None:
    for name, agent in cfg.agents.items():
        if agent.role not in ROLES:
            raise configlib.ConfigError(f"{source_path}: unknown role {agent.role!r} - at `$.agents.{name}.role`; "
                                        f"known: {', '.join(ROLES)}")
        if agent.engine not in ENGINES:
            raise configlib.ConfigError(f"{source_path}: unknown engine {agent.engine!r} - at "
                                        f"`$.agents.{name}.engine`; known: {', '.join(ENGINES)}")


def settings_table(settings: type | msgspec.Struct, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(setting, type, default, description) for each field of a protocol's settings Struct, nested tables
    flattened (``sft.learning_rate``) with their real defaults (a nested table's own default, such as
    ``teacher_sft: SFTConfig = SFTConfig(epochs=3)``, over its class's); required ones say so. A description is the
    field's ``msgspec.Meta(description=...)``, else its comment in the source."""
    cls = settings if isinstance(settings, type) else type(settings)
    rows, comments = [], source_comments(cls)
    for f in msgspec.structs.fields(cls):
        default = getattr(settings, f.name) if not isinstance(settings, type) else f.default \
            if f.default is not msgspec.NODEFAULT else (
                f.default_factory() if f.default_factory is not msgspec.NODEFAULT else msgspec.NODEFAULT)
        if isinstance(default, msgspec.Struct):
            rows += settings_table(default, f"{prefix}{f.name}.")
            continue
        shown = "(required)" if default is msgspec.NODEFAULT else "none" if default is None else \
            msgspec.json.encode(default).decode()
        rows.append((prefix + f.name, type_name(f.type), shown, field_doc(f.type) or comments.get(f.name, "")))
    return rows


def source_comments(cls: type) -> dict[str, str]:
    """Field -> the comment beside it in the class's source (or on the lines just above it)."""
    import inspect

    out: dict[str, str] = {}
    for c in cls.__mro__:
        try:
            lines = inspect.getsource(c).splitlines()
        except (OSError, TypeError):
            continue
        above: list[str] = []
        for line in lines:
            text = line.strip()
            if text.startswith("#"):
                above.append(text.lstrip("# "))
                continue
            m = re.match(r"(\w+)\s*:[^#]*(?:#\s*(.*))?$", text)
            if m and m.group(1) not in out and (m.group(2) or above):
                out[m.group(1)] = m.group(2) or " ".join(above)
            above = []
    return out


def settings_lines(settings: type, width: int = 24) -> list[str]:
    """The settings table as plain lines, nothing cut: a default longer than ``width`` puts its description on
    the next line."""
    rows = [("setting", "type", "default", "what it does"), *settings_table(settings)]
    w = [max(len(r[i]) for r in rows) for i in range(2)] + [min(width, max(len(r[2]) for r in rows))]
    out = []
    for r in rows:
        head = f"{r[0]:<{w[0]}}  {r[1]:<{w[1]}}  "
        if len(r[2]) <= w[2]:
            out.append(f"{head}{r[2]:<{w[2]}}  {r[3]}".rstrip())
        else:
            out += [head + r[2]] + ([" " * (len(head) + w[2] + 2) + r[3]] if r[3] else [])
    return out


def description(p: Protocol) -> str:
    """The protocol's docstring (its function's, else its module's), dedented; empty when it has none."""
    import inspect

    doc = p.fn.__doc__ or getattr(sys.modules.get(p.module), "__doc__", None) or ""
    return inspect.cleandoc(doc)


def summary(p: Protocol) -> str:
    """The first paragraph of the description, on one line (never cut mid-sentence)."""
    first = description(p).split("\n\n", 1)[0]
    return " ".join(first.split())


def type_name(t: Any) -> str:
    if get_origin(t) is Annotated:
        t = t.__origin__
    if isinstance(t, type) and not getattr(t, "__args__", None):
        return t.__name__
    return re.sub(r"\b[\w.]+\.(\w+)", r"\1", str(t).replace("typing.", ""))


def field_doc(t: Any) -> str:
    """A field's one-line description (``Annotated[float, msgspec.Meta(description=...)]``), else empty."""
    return next((m.description for m in getattr(t, "__metadata__", ()) if isinstance(m, msgspec.Meta)
                 and m.description), "")


def available() -> list[Protocol | tuple[str, str]]:
    """Every protocol this process can run: built-in and imported ones, then installed entry points (name,
    module) that fail to import are listed as such."""
    load_builtin()
    broken = []
    for name, module in pluginlib.installed().items():
        if name not in PROTOCOLS:
            try:
                pluginlib.load(f"module:{module}")
            except Exception as e:  # a broken plugin must not hide the others
                broken.append((name, f"{module}: {type(e).__name__}: {e}"))
    return [PROTOCOLS[k] for k in sorted(PROTOCOLS)] + broken
