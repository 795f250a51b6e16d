"""schoolroom: run classroom experiments, resume them, and replay their message logs.

  schoolroom run CONFIG [--set key=value ...] [--limit N] [--out DIR] [--reuse AGENT=RUN]
  schoolroom resume RUN [--set key=value ...]   (only settings the answered calls do not depend on)
  schoolroom replay RUN [--out DIR] [--html OUT.html] [--parquet DIR] [--transcript PROBLEM_ID]
  schoolroom replay RUN_A RUN_B
  schoolroom protocols [NAME]
  schoolroom smoke
"""

from __future__ import annotations

import argparse
import os
import sys
import time
import traceback
from pathlib import Path


def smoke(args: argparse.Namespace) -> int:
    """Load the model and solve a few synthetic problems: proves the install works."""
    from rich.console import Console
    from rich.table import Table

    from schoolroom.agents.engines import Params, Prompt
    from schoolroom.agents.engines.hf import HFEngine
    from schoolroom.environment import answers_match, extract_answer, synthetic
    from schoolroom.environment.prompts import chat, render

    console = Console()
    t0 = time.perf_counter()
    engine = HFEngine(args.model)
    how = "from the cache" if engine.source.cached else f"converted in {engine.source.convert_s:.1f}s"
    console.print(f"loaded {args.model} ({how}) in {time.perf_counter() - t0:.1f}s")
    problems = synthetic(args.n, steps=[1, 2, 3], seed=args.seed)
    prompts = [Prompt(messages=chat(render("student_solve", question=p.question))) for p in problems]
    t0 = time.perf_counter()
    outs = engine.generate(prompts, Params(max_tokens=args.max_tokens))
    table = Table("problem", "steps", "gold", "answer", "correct")
    right = 0
    for p, (c,) in zip(problems, outs):
        ans = extract_answer(c.text)
        ok = answers_match(ans, p.answer)
        right += ok
        table.add_row(p.question, str(len(p.gold_steps)), p.answer, str(ans), "yes" if ok else "no")
    console.print(table)
    console.print(f"{right}/{len(problems)} correct; generation {time.perf_counter() - t0:.1f}s")
    return 0


class _Progress:
    """Progress bars for agent calls on a terminal; one line per finished call elsewhere."""

    def __init__(self):
        from rich.console import Console
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.console = Console(stderr=True)
        self.bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                             TimeElapsedColumn(), console=self.console, disable=not self.console.is_terminal)
        self.tasks: dict[str, int] = {}
        self.t0 = time.perf_counter()

    def __call__(self, label: str, done: int, total: int) -> None:
        if not self.console.is_terminal:
            self.console.print(f"[{time.perf_counter() - self.t0:6.0f}s] {label}: {done}/{total}", highlight=False)
            return
        if label not in self.tasks or self.bars.tasks[self.tasks[label]].finished:
            self.tasks[label] = self.bars.add_task(label, total=total)
        self.bars.update(self.tasks[label], completed=done)

    def say(self, text: str) -> None:
        self.console.print(text if self.console.is_terminal else f"[{time.perf_counter() - self.t0:6.0f}s] {text}",
                           highlight=False, markup=False, soft_wrap=True)  # one line however long

    def __enter__(self):
        self.bars.start()
        return self

    def __exit__(self, *exc):
        self.bars.stop()


def _reuse(items: list[str]) -> dict[str, str]:
    out = {}
    for item in items:
        agent, sep, run = item.partition("=")
        if not sep:
            raise SystemExit(f"--reuse takes AGENT=RUN_DIR, not {item!r}")
        out[agent] = str(Path(run) / "messages.jsonl") if Path(run).is_dir() else run
    return out


def _resume_set(run: Path, items: list[str]) -> str | None:
    """``resume RUN --set KEY=VALUE``: settings that leave every answered call's key as it was (endpoints,
    retries, timeouts, concurrency, resources, where Ray runs) are written into ``RUN/config.toml``, so a later
    resume keeps them. Returns the refusal, in one line, when one would change a call key (nothing written).
    A wrong value or type raises ConfigError naming the ``--set``."""
    from schoolroom import config as configlib
    from schoolroom.classroom.handles import resumable
    from schoolroom.errors import command

    path = run / "config.toml"
    old, _ = configlib.load(path)
    for item in items:
        key, _ = configlib.parse_override(item)
        parts = key.split(".")
        if parts[0] == "agents" and len(parts) > 1 and parts[1] not in old.agents:
            return (f"resume --set {key}: refused: the run has no agent {parts[1]!r} "
                    f"(its agents: {', '.join(old.agents)}); nothing was changed")
        if not resumable(key):
            return (f"resume --set {key}: refused: {key} is part of the keys of the calls the run already answered "
                    "(a resume may change only an agent's endpoint, API key variable, retries, timeouts, concurrency "
                    "and resources, and [runtime] but chunk_size); nothing was changed. A new run with it: "
                    f"{command()} run {path} --set {item}")
    _, raw = configlib.load(path, items)  # decoded: a wrong type names the --set
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(configlib.dump(raw))
    os.replace(tmp, path)
    return None


def run_cmd(args: argparse.Namespace) -> int:
    from schoolroom import config as configlib
    from schoolroom.classroom import runner
    from schoolroom.errors import NotStarted, RunFailed, Terminated

    if args.command == "resume":
        if not (Path(args.run) / "messages.jsonl").exists():
            print(f"nothing to resume: {args.run} is not a run directory (no messages.jsonl in it)", file=sys.stderr)
            return 2
        args.config = str(Path(args.run) / "config.toml")
    try:
        if args.command == "resume" and args.set:
            refused = _resume_set(Path(args.run), args.set)
            if refused:
                print(refused, file=sys.stderr)
                return 2
            args.set = []  # written into the run's config.toml
        cfg, _ = configlib.load(args.config, args.set)
        with _Progress() as progress:
            run_dir = runner.run(cfg, source=args.config, out=args.out, limit=args.limit,
                                 resume=getattr(args, "run", None), reuse=_reuse(args.reuse), progress=progress,
                                 say=progress.say)
    except configlib.ConfigError as e:
        print(f"config error: {e}", file=sys.stderr)
        return 2
    except NotStarted as e:
        print(e, file=sys.stderr)
        return 2
    except RunFailed as e:
        if args.debug:
            traceback.print_exception(e.__cause__ or e, file=sys.stderr)
        print(e, file=sys.stderr)
        return 143 if isinstance(e.__cause__, Terminated) else 130 if isinstance(e.__cause__, KeyboardInterrupt) else 1
    print((run_dir / "report.md").read_text())
    print(f"run directory: {run_dir}")
    return 0


def replay_cmd(args: argparse.Namespace) -> int:
    """Replay a run's protocol from its log (no agent started) and check its report against the run's; or
    print one problem's exchange; or write the page, the Parquet tables, or compare two runs."""
    import warnings

    from schoolroom import config as configlib
    from schoolroom.analysis import Run
    from schoolroom.analysis.compare import compare_markdown
    from schoolroom.classroom import replay
    from schoolroom.classroom.callpath import NotInLog
    from schoolroom.classroom.memo import RemadeDiffers
    from schoolroom.errors import command

    for given in args.runs:
        path = Path(given)
        if path.is_file() and path.suffix != ".jsonl":  # a config, most likely: not what replay reads
            inside = path.parent if (path.parent / "messages.jsonl").exists() else None
            print(f"replay reads a run directory (or its messages.jsonl), not the file {given}: "
                  + (f"give the run directory {inside}" if inside else
                     f"a config runs with `{command()} run {given}`, which makes the run directory"), file=sys.stderr)
            return 2
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # a damaged log is said once, below
            run, *other = [Run(p) for p in args.runs[:2]]
    except FileNotFoundError as e:
        print(f"{e}: give a run directory (or its messages.jsonl)", file=sys.stderr)
        return 2
    if run.config_error:
        print(f"config error: {run.config_error}; the protocol's own message types are read as unknown records",
              file=sys.stderr)
    run_dir = run.dir
    if run.stopped:
        print(f"the log is damaged: read every message before {run.stopped}", file=sys.stderr)
    if len(args.runs) > 2:
        print("replay takes one run, or two to compare", file=sys.stderr)
        return 2
    if len(args.runs) == 2:
        print(compare_markdown(run, other[0]))
        return 0
    if args.transcript:
        try:
            print(run.transcript(args.transcript))
        except KeyError as e:
            print(e.args[0], file=sys.stderr)
            return 2
        return 0
    status = 0
    out = Path(args.out or run_dir / "replay")
    try:
        done = replay.replay(run_dir, out)
    except (NotInLog, RemadeDiffers, configlib.ConfigError, FileNotFoundError, ValueError) as e:
        print(f"replay stopped: {e}", file=sys.stderr)
        status = 2
    except Exception as e:
        status = _unexpected(e, args, out / "error.log", "replay stopped")
    else:
        print((done.out / "report.md").read_text())
        same = ("report, metrics and plots equal the run's (wall times aside)" if not done.differences else
                "differs from the run's: " + "; ".join(done.differences))
        print(f"replayed from the log into {done.out}: {done.answered} calls answered, no agent started; {same}"
              + (f"; the protocol made {done.unlogged} messages the run did not log" if done.unlogged else ""))
    if args.parquet:
        files = run.to_parquet(args.parquet)
        print(f"{len(files)} Parquet tables in {args.parquet}")
    if args.html:
        from schoolroom.analysis.page import write_page

        print(f"page: {write_page(run, args.html)}")  # the run's own report (the replay checked it)
    return status


def protocols_cmd(args: argparse.Namespace) -> int:
    """Every protocol this installation can run (built in, installed entry points), one line each; or one
    protocol's description and every setting with its type and default (``protocols NAME``). Nothing is cut."""
    from schoolroom.classroom import loading as registry
    from schoolroom.errors import command

    found = registry.available()
    if args.name is None:
        width = max((len(p[0] if isinstance(p, tuple) else p.name) for p in found), default=0)
        for p in found:
            if isinstance(p, tuple):
                print(f"{p[0]:<{width}}  installed, fails to import: {p[1]}")
            else:
                print(f"{p.name:<{width}}  {registry.summary(p) or p.module}")
        print(f"\n`{command()} protocols NAME` shows one protocol's description and every setting with its default "
              "(set in a config's [protocol] table)")
        return 0
    match = [p for p in found if (p[0] if isinstance(p, tuple) else p.name) == args.name]
    if not match:
        names = ", ".join(p[0] if isinstance(p, tuple) else p.name for p in found)
        print(f"no protocol {args.name!r}; available: {names}", file=sys.stderr)
        return 2
    (p,) = match[:1]
    if isinstance(p, tuple):
        print(f"{p[0]}: installed, fails to import: {p[1]}", file=sys.stderr)
        return 1
    print(f"{p.name}  ({p.module})\n")
    if registry.description(p):
        print(registry.description(p) + "\n")
    print(f"[protocol] settings (name = {p.name!r}):")
    for line in registry.settings_lines(p.settings):
        print("  " + line)
    return 0


def _unexpected(e: BaseException, args: argparse.Namespace, log: Path | None = None, what: str = "error") -> int:
    """An error nobody foresaw: one line here, the traceback in a file (and here with --debug)."""
    from schoolroom.errors import one_line
    from schoolroom.models import cache_dir

    log = log or cache_dir() / "error.log"
    try:
        log.parent.mkdir(parents=True, exist_ok=True)
        log.write_text("".join(traceback.format_exception(e)))
        where = f"full traceback in {log}"
    except OSError:
        where = "run with --debug for the traceback"
    if getattr(args, "debug", False):
        traceback.print_exception(e, file=sys.stderr)
    print(f"{what}: {one_line(e)}\n{where}", file=sys.stderr)
    return 1


def _quiet_libraries(debug: bool) -> None:
    """Without --debug, libraries keep their progress bars, advice and actors' output to themselves (Ray keeps
    the actors' logs in its session folder), and a warning is one line."""
    import warnings

    from schoolroom.log import TornLineWarning

    warnings.formatwarning = lambda message, category, *a, **k: f"warning: {message}\n"
    if debug:
        return
    os.environ["SCHOOLROOM_QUIET"] = "1"
    for var in ("TRANSFORMERS_VERBOSITY", "DATASETS_VERBOSITY"):
        os.environ.setdefault(var, "error")
    for var in ("HF_HUB_DISABLE_PROGRESS_BARS", "TQDM_DISABLE", "TRANSFORMERS_NO_ADVISORY_WARNINGS"):
        os.environ.setdefault(var, "1")
    os.environ.setdefault("PYTHONWARNINGS", "ignore")  # agents' processes
    warnings.simplefilter("ignore")
    warnings.simplefilter("default", TornLineWarning)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    debug = dict(action="store_true", help="print full tracebacks and the libraries' and agents' own output")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--debug", **debug, default=argparse.SUPPRESS)  # after the command as well as before it
    parser = argparse.ArgumentParser(prog="schoolroom", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--debug", **debug)
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("smoke", parents=[common], help="load the model and solve a few synthetic problems")
    p.add_argument("--model", default="smollm2-135m-instruct")
    p.add_argument("-n", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-tokens", type=int, default=96)
    p.set_defaults(func=smoke)
    p = sub.add_parser("run", parents=[common], help="run an experiment config into a run directory")
    p.add_argument("config")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set agents.student.max_tokens=64")
    p.add_argument("--limit", type=int, help="cap the problems of every problem set")
    p.add_argument("--out", help="parent folder of the run directory (default: run.out)")
    p.add_argument("--reuse", action="append", default=[], metavar="AGENT=RUN",
                   help="answer AGENT's calls from an earlier run's log where the arguments match")
    p.set_defaults(func=run_cmd)
    p = sub.add_parser("resume", parents=[common],
                       help="finish an interrupted run: logged calls are not asked again")
    p.add_argument("run")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="change a setting the answered calls do not depend on (an endpoint, retries, timeouts, "
                        "concurrency), e.g. --set agents.gpt.base_url=http://host:8000/v1; written into "
                        "RUN/config.toml. Others are refused")
    p.set_defaults(func=run_cmd, out=None, limit=None, reuse=[])
    p = sub.add_parser("replay", parents=[common],
                       help="run a run's protocol again from its log alone (no agent started) and check its report; "
                            "or compare two runs, write a page, Parquet, a transcript")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (or its messages.jsonl); two: compare them")
    p.add_argument("--out", help="folder for the replayed report (default RUN/replay; never the run's own files)")
    p.add_argument("--html", metavar="OUT.html", help="write one self-contained page to read the classroom")
    p.add_argument("--parquet", metavar="DIR", help="write one Parquet table per message type")
    p.add_argument("--transcript", metavar="PROBLEM_ID", help="print one problem's whole exchange")
    p.set_defaults(func=replay_cmd)
    p = sub.add_parser("protocols", parents=[common],
                       help="list the protocols this installation can run; with NAME, one protocol's settings")
    p.add_argument("name", nargs="?", metavar="NAME", help="a protocol: its description, settings and defaults")
    p.set_defaults(func=protocols_cmd)
    args = parser.parse_args(argv)
    _quiet_libraries(args.debug)
    try:
        code = args.func(args)
        sys.stdout.flush()  # here, where a closed pipe is caught, not at exit
        return code
    except BrokenPipeError:  # `schoolroom replay RUN | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        return _unexpected(e, args)


if __name__ == "__main__":
    sys.exit(main())
