"""Reading a run back from its message log alone: summary, usage, accuracy, transcripts."""

from __future__ import annotations

from collections import Counter, defaultdict

from schoolroom.messages import Attempt, Call, EvalReport, Guidance, Message, Note, Problem, Usage, Verdict
from schoolroom.protocols.stats import fmt_acc


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


def accuracy_groups(messages: list[Message]) -> dict[tuple[int, str], list[bool]]:
    """Verdicts grouped by (round, guidance): 'teacher k=K' when the attempt had guidance, else 'unguided'."""
    messages = live(messages)
    by_id = {m.id: m for m in messages}
    groups: dict[tuple[int, str], dict[str, bool]] = defaultdict(dict)
    for v in messages:
        if not isinstance(v, Verdict):
            continue
        a = by_id.get(v.attempt_id)
        label = "unguided"
        if isinstance(a, Attempt):
            g = next((by_id[p] for p in a.parents if isinstance(by_id.get(p), Guidance)), None)
            if g is not None:
                label = f"{g.teacher} k={g.k}"
            if a.adapter:
                label += f" adapter={a.adapter}"
        groups[v.round, label][v.attempt_id] = v.correct  # one verdict per attempt, even if answered twice
    return {k: list(d.values()) for k, d in sorted(groups.items())}


def summary(messages: list[Message]) -> str:
    counts = Counter(type(m).__name__ for m in messages)
    runs = sorted({m.run_id for m in messages if m.run_id})
    lines = [f"run {', '.join(runs) or '?'}: {len(messages)} messages",
             "  " + ", ".join(f"{k} {v}" for k, v in sorted(counts.items())), "",
             "accuracy recomputed from the verdicts (round, guidance):"]
    for (r, label), outcomes in accuracy_groups(messages).items():
        lines.append(f"  round {r}  {label:<28} {fmt_acc(sum(outcomes), len(outcomes))}")
    reports = [m for m in messages if isinstance(m, EvalReport)]
    if reports:
        lines += ["", "evaluation reports:"]
        lines += [f"  round {m.round}  {m.name:<36} {fmt_acc(m.correct, m.n)}" for m in reports]
    notes = Counter(m.kind for m in messages if isinstance(m, Note) and m.kind != "problem_set")
    if notes:
        lines += ["", "notes: " + ", ".join(f"{k} {v}" for k, v in sorted(notes.items()))]
    calls = [m for m in messages if isinstance(m, Call)]
    if calls:
        lines += ["", f"agent calls: {len(calls)}, {sum(c.seconds for c in calls):.0f}s in agents"]
    lines += ["", usage_markdown(messages)]
    return "\n".join(lines)


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
