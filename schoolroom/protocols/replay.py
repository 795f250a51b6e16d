"""Reading a run back from its message log alone: the messages that count, usage, transcripts."""

from __future__ import annotations

from collections import defaultdict

from schoolroom.messages import Attempt, Guidance, Message, Note, Problem, Usage, Verdict


def live(messages: list[Message]) -> list[Message]:
    """The messages that count: without those a crash orphaned (their call was asked again on resume)."""
    dead = {i for m in messages if isinstance(m, Note) and m.kind == "orphaned" for i in m.data.get("ids", [])}
    return [m for m in messages if m.id not in dead] if dead else messages


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


def transcript(messages: list[Message], problem_id: str) -> str:
    """Every message about one problem, in log order."""
    about = [m for m in messages if getattr(m, "problem_id", None) == problem_id]
    if not about:
        raise KeyError(f"no messages about problem {problem_id!r} in this log")
    out = []
    for m in about:
        head = f"[round {m.round}] {type(m).__name__} {m.sender} -> {m.recipient or '*'} ({m.id})"
        if isinstance(m, Problem):
            body = f"{m.question}\n  gold steps:\n" + "\n".join(f"    {s}" for s in m.gold_steps) + f"\n  answer: {m.answer}"
        elif isinstance(m, Guidance):
            body = f"{m.kind} k={m.k} from {m.teacher}:\n" + "\n".join(f"    {s}" for s in m.steps)
        elif isinstance(m, Attempt):
            body = (f"model {m.model} adapter {m.adapter} sample {m.sample}, answer {m.answer!r}\n"
                    + (f"  (given) {m.prefix.rstrip()}\n" if m.prefix else "") + "    " + m.text.strip().replace("\n", "\n    "))
        elif isinstance(m, Verdict):
            body = f"{'correct' if m.correct else 'wrong'}: predicted {m.predicted!r}, gold {m.gold!r}"
        else:
            body = str({f: getattr(m, f) for f in m.__struct_fields__ if f not in Message.__struct_fields__})
        out.append(head + "\n  " + body)
    return "\n\n".join(out)
