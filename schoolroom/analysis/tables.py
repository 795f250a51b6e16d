"""Messages as tables: one pandas DataFrame per message type, flattened, with round, agent, adapter and parents
as columns; and the same written as Parquet, one file per type."""

from __future__ import annotations

import json
import re
from pathlib import Path

import msgspec

from schoolroom.messages import MESSAGES, Message, Unknown

# what people call the tables: the plural they would type, for the built-in message tags
KINDS = {"problems": "problem", "attempts": "attempt", "verdicts": "verdict", "mistakes": "mistake",
         "guidance": "guidance", "rationales": "rationale", "plans": "plan", "step_rewards": "step_rewards",
         "pairs": "preference_pair", "train_requests": "train_request", "train_results": "train_result",
         "eval_reports": "eval_report", "usage": "usage", "notes": "note", "calls": "call",
         "explanations": "explanation", "readings": "reading", "token_scores": "token_scores"}
_NAMES = {tag: kind for kind, tag in KINDS.items()}


def tag_of(m: Message) -> str:
    return m.record_type if isinstance(m, Unknown) else type(m).__struct_config__.tag


def kind_of(tag: str) -> str:
    """The table name of a message tag: ``attempts`` for ``attempt``; a protocol's own tag as it is."""
    return _NAMES.get(tag, tag)


def tag_for(kind: str) -> str:
    tag = KINDS.get(kind, kind)
    if tag not in MESSAGES:
        known = ", ".join(sorted(KINDS))
        raise KeyError(f"no table {kind!r}: the tables are {known}, or a protocol's own message tag")
    return tag


def row(m: Message, adapters: dict[str, str | None]) -> dict:
    """One message as a flat row: envelope first (``agent`` is the sender), then its fields; dict fields as
    ``field.key`` columns; ``adapter`` from the message, else from the attempt it is about."""
    raw = msgspec.to_builtins(m)
    raw.pop("type", None)
    if isinstance(m, Unknown):
        raw.pop("record_type", None)
        raw |= raw.pop("data", {})
    out = {"id": raw.pop("id"), "round": raw.pop("round"), "agent": raw.pop("sender"),
           "recipient": raw.pop("recipient"), "parents": list(raw.pop("parents")), "time": raw.pop("time"),
           "run_id": raw.pop("run_id")}
    if "adapter" not in raw:
        out["adapter"] = adapters.get(raw.get("attempt_id") or "")
    for k, v in raw.items():
        if isinstance(v, dict) and k != "value":
            out |= {f"{k}.{kk}": vv for kk, vv in v.items()}
        else:
            out[k] = v
    return out


def frames(messages: list[Message]) -> dict[str, list[dict]]:
    """Rows per table name, in log order."""
    adapters = {m.id: m.adapter for m in messages if tag_of(m) == "attempt"}
    out: dict[str, list[dict]] = {}
    for m in messages:
        out.setdefault(kind_of(tag_of(m)), []).append(row(m, adapters))
    return out


def _parquet_safe(df):
    """Columns pyarrow cannot type (mixed values, nested lists of dicts) as JSON text."""
    import pyarrow as pa

    df = df.copy()
    for c in df.columns:
        try:
            pa.array(df[c].tolist())
        except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
            df[c] = [json.dumps(v, default=str) for v in df[c]]
    return df


def to_parquet(tables: dict, folder: str | Path) -> dict[str, Path]:
    """One Parquet file per table (``attempts.parquet``, ...); returns them by table name."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    out = {}
    for kind, df in tables.items():
        path = folder / f"{re.sub(r'[^A-Za-z0-9_.-]', '_', kind)}.parquet"
        _parquet_safe(df).to_parquet(path, index=False)
        out[kind] = path
    return out
