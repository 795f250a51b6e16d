"""The Teacher: guides a student with the first k steps (more writing methods arrive with their protocols)."""

from __future__ import annotations

from schoolroom.agents.base import Agent
from schoolroom.agents.engines import Prompt
from schoolroom.environment import split_steps
from schoolroom.environment.prompts import chat, render
from schoolroom.messages import Guidance, Problem


class Teacher(Agent):
    role = "teacher"

    def guide(self, problems: Problem | list[Problem], k: int) -> Guidance | list[Guidance]:
        """The first ``k`` steps of a solution for each problem (one Guidance per problem)."""
        single = isinstance(problems, Problem)
        batch = [problems] if single else list(problems)
        prompts = [Prompt(messages=chat(render("teacher_first_steps", question=p.question, k=str(k)),
                                        self.config.system_prompt),
                          task="first_steps", args={"k": k}, problem=p) for p in batch]
        outs = self.generate(prompts, self.params(n=1))
        guidance = []
        for p, (c,) in zip(batch, outs):
            steps = [s for s in split_steps(c.text) if not s.startswith("####")][:k]
            if len(steps) < k:
                self.note("unparsed", f"asked for {k} steps, the reply has {len(steps)}", p.problem_id,
                          reply=c.text, task="first_steps")
            guidance.append(Guidance(problem_id=p.problem_id, kind="first_steps", k=k, steps=tuple(steps),
                                     text="\n".join(steps), teacher=self.name, sender=self.name, parents=(p.id,)))
        return guidance[0] if single else guidance
