"""Peer review: two students, no teacher. Each solves; each reads the other's solution and writes a revised one;
the verifier judges both rounds. Does reading a classmate's work help, and whom?"""

from __future__ import annotations

import msgspec

from schoolroom.api import (Acc, Attempt, Classroom, Problem, Prompt, Report, Student, Table, batched, chat, compare,
                            extract_answer, protocol, role, split_steps)

REVIEW = ("{question}\n\nYour solution:\n{own}\n\nA classmate's solution:\n{other}\n\nCheck both step by step. "
          "Then write the correct solution, one step per line, and end with the line '#### <answer>'.")


@role("peer")
class Peer(Student):
    @batched("problems", "own", "other")
    def review(self, problems: list[Problem], own: list[Attempt], other: list[Attempt]) -> list[Attempt]:
        """A revised attempt per problem, after reading its own and the other student's attempt."""
        prompts = [review_prompt(self, p, a, b) for p, a, b in zip(problems, own, other)]
        outs = self.generate(prompts, self.params(n=1, stop_after="####"))
        return [Attempt(problem_id=p.problem_id, text=c.text, steps=tuple(split_steps(c.text)),
                        answer=extract_answer(c.text), model=self.engine.model, tokens=c.completion_tokens,
                        sender=self.name, parents=(p.id, a.id, b.id))
                for p, a, b, (c,) in zip(problems, own, other, outs)]


def review_prompt(peer: Peer, p: Problem, own: Attempt, other: Attempt) -> Prompt:
    text = REVIEW.format(question=p.question, own=own.prefix + own.text, other=other.prefix + other.text)
    return Prompt(messages=chat(text, peer.config.system_prompt), task="review", problem=p)


class PeerSettings(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    problems: str = "eval"
    peers: list[str] = msgspec.field(default_factory=lambda: ["alice", "bob"])
    seed: int = 0


@protocol("peer_review", PeerSettings)
def peer_review(room: Classroom, cfg: PeerSettings) -> Report:
    if len(cfg.peers) != 2:
        raise ValueError("peer_review takes two peers (protocol.peers)")
    problems = room.problems(cfg.problems)
    a, b = (room.agent(name, Peer) for name in cfg.peers)
    first = {a.name: a.solve(problems), b.name: b.solve(problems)}
    second = {a.name: a.review(problems, first[a.name], first[b.name]),
              b.name: b.review(problems, first[b.name], first[a.name])}
    judged = {f"{name} {when}": room.verifier.check(attempts[name], problems)
              for when, attempts in (("alone", first), ("after review", second)) for name in cfg.peers}
    table, metrics, fig = compare(judged, f"{cfg.peers[0]} alone", seed=cfg.seed, header="student, round",
                                  title="Accuracy per student and round")  # also logs an EvalReport per condition
    ok = {label: [v.correct for v in verdicts] for label, verdicts in judged.items()}
    flips = [[name, sum(not x and y for x, y in zip(ok[f"{name} alone"], ok[f"{name} after review"])),
              sum(x and not y for x, y in zip(ok[f"{name} alone"], ok[f"{name} after review"])),
              Acc(sum(ok[f"{name} after review"]), len(problems))] for name in cfg.peers]
    return Report(
        title=f"Peer review: {room.config.run.name}",
        lines=[f"{len(problems)} problems; students " + " and ".join(f"`{n}` ({room.describe(n)})" for n in cfg.peers)
               + "; no teacher. Round 1: each solves alone. Round 2: each reads its own and the other's solution "
               "and writes a revised one."],
        tables=[table, Table("What the review changed", ["student", "wrong → right", "right → wrong",
                                                         "after review"], flips)],
        figures=[fig], metrics={"accuracy": metrics})
