"""The sections every report ends with, from the log alone: what each agent's engine cost, and the faults worked
around."""

from __future__ import annotations

from collections import defaultdict

from schoolroom.log import live
from schoolroom.messages import Message, Note, TrainResult, Usage


def usage_rows(messages: list[Message]) -> list[dict]:
    """Per agent: engine calls, tokens in and out, seconds, errors retried."""
    messages = live(messages)
    acc: dict[str, dict] = defaultdict(lambda: dict(calls=0, prompt_tokens=0, completion_tokens=0, latency_s=0.0,
                                                    errors=0, engine="", model=""))
    for m in messages:
        if isinstance(m, Usage):
            a = acc[m.agent]
            a.update(engine=m.engine, model=m.model)
            for f in ("calls", "prompt_tokens", "completion_tokens", "latency_s", "errors"):
                a[f] += getattr(m, f)
    return [dict(agent=k, **v) for k, v in sorted(acc.items())]


def usage_markdown(messages: list[Message]) -> str:
    rows = usage_rows(messages)
    out = ["| agent | engine | model | generations | prompt tokens | completion tokens | seconds | retried errors |",
           "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    out += [f"| {r['agent']} | {r['engine']} | {r['model']} | {r['calls']} | {r['prompt_tokens']} | "
            f"{r['completion_tokens']} | {r['latency_s']:.1f} | {r['errors']} |" for r in rows]
    return "\n".join(out)


def precision_line(messages: list[Message]) -> str:
    """What precision the trainings ran in (their ``bf16`` metric; ``dtype = "auto"`` picks bf16 only where the
    device computes it natively), as a sentence; empty when no training says (none ran, or an older log)."""
    said = [m.metrics["bf16"] for m in live(messages) if isinstance(m, TrainResult) and "bf16" in m.metrics]
    if not said:
        return ""
    low = sum(1 for x in said if x)
    return (f"Training precision: bf16 autocast in {low} of {len(said)} trainings, float32 in {len(said) - low} "
            "(`dtype`: `auto` takes bf16 only where the device computes it natively; float32 weights and optimizer "
            "state on a CPU).\n\n")


def faults_markdown(messages: list[Message]) -> str:
    """What went wrong and was worked around, for the report: trainings stopped (the previous adapter kept), actors
    that died mid-call (restarted and asked again) and agent outputs that could not be read (recorded and skipped). Empty when nothing did."""
    notes = [m for m in live(messages) if isinstance(m, Note)]
    failed = [f"- {m.text}" for m in notes if m.kind in ("training_failed", "actor_restarted")]
    skipped = defaultdict(int)
    for m in notes:
        if m.kind == "unparsed":
            skipped[m.sender] += 1
    if not failed and not skipped:
        return ""
    return "\n## Faults\n\n" + "\n".join(failed + [
        f"- {n} outputs of agent `{a}` could not be read and were skipped (Notes of kind `unparsed` in the log)"
        for a, n in sorted(skipped.items())]) + "\n"
