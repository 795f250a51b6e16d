"""Procedural multi-step arithmetic word problems with gold steps: no data needed.

Difficulty is the number of operations (1..8). Each operation is one sentence of the
story and one GSM8K-style gold step (``"Tom has 12 + 5 = 17 apples."``). Problems are a
pure function of ``(seed, index, steps)``: the same call gives the same problems anywhere.
"""

from __future__ import annotations

import random
from collections.abc import Sequence

from schoolroom.messages import Problem

NAMES = [("Tom", "he"), ("Mia", "she"), ("Sam", "he"), ("Lily", "she"), ("Ben", "he"), ("Ava", "she"),
         ("Leo", "he"), ("Emma", "she"), ("Noah", "he"), ("Zoe", "she"), ("Omar", "he"), ("Nina", "she")]
ITEMS = ["apples", "marbles", "stickers", "cookies", "pencils", "shells", "cards", "coins", "books", "stamps",
         "balloons", "candies"]
TIMES = {2: "doubles", 3: "triples"}


def _operation(rng: random.Random, x: int, name: str, pron: str, items: str) -> tuple[str, str, int]:
    """One story sentence, its gold step and the new amount, starting from ``x``."""
    choices = ["add", "add", "sub", "sub", "mul", "div"]
    while True:
        op = rng.choice(choices)
        if op == "add":
            b = rng.randint(2, 30)
            y = x + b
            return f"Then {pron} buys {b} more.", f"{name} has {x} + {b} = {y} {items}.", y
        if op == "sub" and x > 3:
            b = rng.randint(1, x - 1)
            y = x - b
            return f"Then {pron} gives away {b}.", f"{name} has {x} - {b} = {y} {items} left.", y
        if op == "mul" and x <= 60:
            k = rng.choice([2, 2, 3, 3, 4, 5])
            said = f"Then {pron} {TIMES[k]} them." if k in TIMES else f"Then {pron} gets {k} times as many."
            return said, f"{name} has {x} * {k} = {x * k} {items}.", x * k
        if op == "div":
            ks = [k for k in (2, 3, 4, 5) if x % k == 0 and x // k >= 2]
            if ks:
                k = rng.choice(ks)
                return (f"Then {pron} splits them into {k} equal groups and keeps one group.",
                        f"{name} keeps {x} / {k} = {x // k} {items}.", x // k)


def make_problem(seed: int, index: int, steps: int) -> Problem:
    if not 1 <= steps <= 8:
        raise ValueError(f"synthetic problems have 1 to 8 steps, not {steps}")
    rng = random.Random(f"schoolroom-synthetic:{seed}:{index}:{steps}")
    name, pron = rng.choice(NAMES)
    items = rng.choice(ITEMS)
    x = rng.randint(3, 40)
    story, gold = [f"{name} has {x} {items}."], []
    for _ in range(steps):
        sentence, step, x = _operation(rng, x, name, pron, items)
        story.append(sentence)
        gold.append(step)
    story.append(f"How many {items} does {name} have now?")
    return Problem(problem_id=f"synthetic/{seed}/{steps}/{index}", dataset="synthetic", question=" ".join(story),
                   gold_steps=tuple(gold), answer=str(x), meta={"gold_steps": steps, "seed": seed})


def synthetic(n: int, steps: int | Sequence[int] = 2, seed: int = 0) -> list[Problem]:
    """``n`` problems; ``steps`` is one difficulty or a list cycled through (``[1, 2, 3]`` mixes them)."""
    sizes = [steps] if isinstance(steps, int) else list(steps)
    if not sizes:
        raise ValueError("steps must name at least one difficulty")
    return [make_problem(seed, i, sizes[i % len(sizes)]) for i in range(n)]
