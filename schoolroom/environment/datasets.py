"""Loaders for the math word-problem datasets, from a data directory or the Hugging Face hub.

Every loader returns :class:`~schoolroom.messages.Problem` messages with the question, the
reference solution split into steps and the final answer. The data directory is the
``data_dir`` argument, else ``$SCHOOLROOM_DATA``, else ``../shared/data`` beside the checkout this package
was installed from (:data:`DEFAULT_DATA_DIR`, wherever the command runs from); its layout is the upstream
files, as in ``shared/data`` (see its README). A dataset not found there is read from the Hugging Face hub
where a copy is known and the hub can be reached.
"""

from __future__ import annotations

import json
import os
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

from schoolroom.environment.answers import last_boxed, split_steps
from schoolroom.hub import offline_reason as hub_offline_reason
from schoolroom.messages import Problem


class DatasetNotFound(FileNotFoundError):
    pass


class UnknownDataset(KeyError):
    """A dataset name no loader knows; said as it is (a KeyError would quote it)."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


def _number(x) -> str:
    """1.0 -> '1', 0.5 -> '0.5', '43' -> '43'."""
    if isinstance(x, str):
        try:
            x = float(x)
        except ValueError:
            return x.strip()
    return str(int(x)) if float(x).is_integer() else repr(float(x))


_ASY = re.compile(r"\[asy\].*?\[/asy\]", re.DOTALL)


def math_steps(solution: str) -> list[str]:
    """MATH solution -> steps: its paragraphs (one-paragraph solutions: sentences), Asymptote code removed."""
    text = _ASY.sub("", solution)
    paragraphs = [re.sub(r"\s*\n\s*", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]
    return paragraphs if len(paragraphs) > 1 else split_steps(text)


_CALC = re.compile(r"<<[^>]*>>")


def gsm8k_steps(answer: str) -> tuple[list[str], str]:
    """GSM8K worked answer -> (steps without ``<<...>>`` notes, final answer)."""
    body, _, final = answer.rpartition("####")
    steps = [_CALC.sub("", ln).strip() for ln in body.strip().splitlines() if ln.strip()]
    return steps, final.strip().replace(",", "")


def _socratic(step: str) -> str:
    return step.split(" ** ", 1)[1] if " ** " in step else step


def _jsonl(path: Path) -> list[dict]:
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def _equation_step(equation: str, answer: str) -> str:
    eq = re.sub(r"\s+", " ", equation.strip())
    eq = re.sub(r"(\d)\.0\b", r"\1", eq).replace("( ", "(").replace(" )", ")")
    eq = re.sub(r"^X\s*=\s*", "", eq)
    return eq if "=" in eq else f"{eq} = {answer}"


# ---- one reader per dataset: (data_dir, split) -> list of (id, question, steps, answer, meta)

def _read_gsm8k(root: Path, split: str):
    out = []
    for i, r in enumerate(_jsonl(root / "gsm8k" / f"{split}.jsonl")):
        steps, ans = gsm8k_steps(r["answer"])
        if split.endswith("socratic"):
            steps = [_socratic(s) for s in steps]
        out.append((f"gsm8k/{split}/{i}", r["question"], steps, ans, {}))
    return out


def _read_svamp(root: Path, split: str):
    out = []
    for r in json.loads((root / "svamp" / "SVAMP.json").read_text(encoding="utf-8")):
        ans = _number(r["Answer"])
        q = f'{r["Body"].strip().rstrip(".")}. {r["Question"].strip()}'
        out.append((f'svamp/{r["ID"]}', q, [_equation_step(r["Equation"], ans)], ans, {"type": r["Type"]}))
    return out


def _read_asdiv(root: Path, split: str):
    formulas: dict[str, str] = {}
    xml = root / "asdiv" / "ASDiv.xml"
    if xml.exists():
        for p in ET.parse(xml).getroot().iter("Problem"):
            f = p.findtext("Formula")
            if f:
                formulas[p.get("ID", "")] = f.strip()
    out = []
    for r in _jsonl(root / "asdiv" / "asdiv.jsonl"):
        f = formulas.get(r["id"])
        steps = [re.sub(r"\s*r\d+$", "", f)] if f else []
        out.append((f'asdiv/{r["id"]}', r["question"], steps, r["answer"], {}))
    return out


def _mawps(folder: str, file: str, prefix: str):
    def read(root: Path, split: str):
        out = []
        for i, r in enumerate(json.loads((root / folder / file).read_text(encoding="utf-8"))):
            ans = _number(r["lSolutions"][0])
            steps = [_equation_step(e, ans) for e in r.get("lEquations", [])]
            q = re.sub(r"\s+([.,?!])", r"\1", r["sQuestion"].strip())
            out.append((f'{prefix}/{r.get("iIndex", i)}', q, steps, ans, {}))
        return out

    return read


def _read_math(root: Path, split: str):
    out = []
    for r in _jsonl(root / "math" / f"{split}.jsonl"):
        out.append((f'math/{split}/{r.get("idx", len(out))}', r["problem"], math_steps(r["solution"]),
                    last_boxed(r["solution"]) or "", {"level": r.get("level"), "subject": r.get("type")}))
    return out


def _read_math500(root: Path, split: str):
    out = []
    for r in _jsonl(root / "math500" / f"{split}.jsonl"):
        out.append((f'math500/{r["unique_id"]}', r["problem"], math_steps(r["solution"]), r["answer"],
                    {"level": r.get("level"), "subject": r.get("subject")}))
    return out


# name -> (reader, splits, relative paths it needs, hub id and config for users with hub access)
DATASETS: dict[str, tuple[Callable, tuple[str, ...], str, tuple[str, str | None] | None]] = {
    "gsm8k": (_read_gsm8k, ("train", "test", "test_socratic"), "gsm8k/{split}.jsonl", ("openai/gsm8k", "main")),
    "svamp": (_read_svamp, ("test",), "svamp/SVAMP.json", ("ChilleD/SVAMP", None)),
    "asdiv": (_read_asdiv, ("test",), "asdiv/asdiv.jsonl", None),
    "multiarith": (_mawps("multiarith", "MultiArith.json", "multiarith"), ("test",), "multiarith/MultiArith.json",
                   ("ChilleD/MultiArith", None)),
    "addsub": (_mawps("addsub", "AddSub.json", "addsub"), ("test",), "addsub/AddSub.json", None),
    "singleeq": (_mawps("singleeq", "questions.json", "singleeq"), ("test",), "singleeq/questions.json", None),
    "math": (_read_math, ("test",), "math/{split}.jsonl", None),
    "math500": (_read_math500, ("test",), "math500/{split}.jsonl", ("HuggingFaceH4/MATH-500", None)),
}


# the checkout's sibling: <checkout>/../shared/data, where <checkout> holds this package (an editable install)
DEFAULT_DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared" / "data"


def resolve_data_dir(explicit: str | os.PathLike | None = None) -> Path | None:
    """The data directory: ``explicit``, else ``$SCHOOLROOM_DATA``, else :data:`DEFAULT_DATA_DIR` where it
    exists; None when there is none."""
    d = explicit or os.environ.get("SCHOOLROOM_DATA")
    if d:
        return Path(d).expanduser()
    return DEFAULT_DATA_DIR if DEFAULT_DATA_DIR.is_dir() else None


def _from_hub(name: str, split: str, hub: tuple[str, str | None]) -> list[Problem]:
    from datasets import load_dataset  # only users with hub access get here

    repo, config = hub
    rows = load_dataset(repo, config, split=split)
    out = []
    for i, r in enumerate(rows):
        if name == "gsm8k":
            steps, ans = gsm8k_steps(r["answer"])
            q = r["question"]
        elif name == "math500":
            steps, ans, q = math_steps(r["solution"]), r["answer"], r["problem"]
        else:  # SVAMP / MultiArith mirrors: question + numeric answer
            q = r.get("question_concat") or r.get("question") or r.get("Question", "")
            ans = _number(r.get("final_ans") or r.get("Answer") or r.get("answer"))
            steps = [_equation_step(r["Equation"], ans)] if r.get("Equation") else []
        out.append(Problem(problem_id=f"{name}/{split}/{i}", dataset=name, question=q,
                           gold_steps=tuple(steps), answer=str(ans)))
    return out


def load(name: str, split: str = "test", data_dir: str | os.PathLike | None = None,
         limit: int | None = None) -> list[Problem]:
    """Load ``split`` of dataset ``name`` as Problems (the first ``limit`` of them, in file order)."""
    key = name.lower().replace("-", "").replace("_", "")
    key = {"math500": "math500", "asdiva": "asdiv"}.get(key, key)
    if key == "synthetic":
        raise UnknownDataset("synthetic problems are made, not loaded: call synthetic(n, steps=...) "
                             "(in a config: source = \"synthetic\")")
    if key not in DATASETS:
        raise UnknownDataset(f"unknown dataset {name!r}; known: synthetic (made, needs no data), "
                             f"{', '.join(DATASETS)}")
    reader, splits, rel, hub = DATASETS[key]
    if split not in splits:
        raise ValueError(f"dataset {key} has splits {', '.join(splits)}, not {split!r}")
    root = resolve_data_dir(data_dir)
    looked = []
    if root is not None:
        path = root / rel.format(split=split)
        looked.append(str(path))
        if path.exists():
            rows = reader(root, split)
            problems = [Problem(problem_id=pid, dataset=key, question=q, gold_steps=tuple(s), answer=a,
                                meta={k: v for k, v in meta.items() if v is not None} | {"gold_steps": len(s)})
                        for pid, q, s, a, meta in rows]
            return problems[:limit] if limit is not None else problems
    else:
        looked.append(f"no data directory (no data_dir given, $SCHOOLROOM_DATA unset, no {DEFAULT_DATA_DIR})")
    offline = hub_offline_reason() if hub is not None else None
    if hub is not None and offline is None:
        try:
            problems = _from_hub(key, split, hub)
            return problems[:limit] if limit is not None else problems
        except ImportError:
            looked.append(f"hub {hub[0]}: the `datasets` package is not installed (pip install 'schoolroom[hub]')")
        except Exception as e:  # network errors come in many types
            looked.append(f"hub {hub[0]}: {type(e).__name__}: {e}")
    elif hub is not None:
        looked.append(f"hub {hub[0]}: not tried, {offline}")
    else:
        looked.append("hub: no hub copy is known for this dataset")
    raise DatasetNotFound(f"dataset {key} split {split} not found; looked in: " + "; ".join(looked))
