"""Hugging Face transformers engine: CPU or GPU, one continuous batch per call (``batching.py``); the default."""

from __future__ import annotations

import re
import time

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt, cut_at_stop, render_prompt


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: str = "smollm2-135m-instruct", device: str = "cpu", dtype: str = "auto",
                 batch_size: int = 16, threads: int | None = None):
        """``dtype="auto"`` is float32: greedy text in bf16 changes with the batch it was decoded in, which resume and
        replay must not see; name ``bfloat16`` for speed where that does not matter (a GPU sampling rollouts)."""
        import torch

        from schoolroom import models

        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.device = device
        self.batch_size = batch_size  # rows decoded together (a prompt's n samples are n rows)
        self.share_prefix = True  # n samples of a prompt share its prefill (False: each reads it; to compare)
        self.dtype = "float32" if dtype == "auto" else dtype
        self.tokenizer, self.lm, self.source = models.load(model, device=device, dtype=self.dtype)
        self.base = self.lm
        self.adapter = None

    # -- prompts
    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    # -- adapters
    def load_adapter(self, version: str, path: str) -> None:
        """Generate with the peft adapter in ``path`` from now on (``version`` names it in Attempts)."""
        from peft import PeftModel

        name = peft_name(version)
        if self.lm is self.base:
            self.lm = PeftModel.from_pretrained(self.base, path, adapter_name=name).eval()
        elif version != self.adapter:
            old = peft_name(self.adapter)
            self.lm.load_adapter(path, adapter_name=name)
            self.lm.set_adapter(name)
            self.lm.delete_adapter(old)
            self.lm.eval()
        self.adapter = version

    def unload_adapter(self) -> None:
        if self.lm is not self.base:
            self.base = self.lm.unload()
            self.lm = self.base
        self.adapter = None

    # -- generation
    def generate(self, prompts: list[Prompt], params: Params) -> list[list[Completion]]:
        """The whole call in one continuous batch (``batching.decode``): prompts shortest first, a finished row's
        place taken by a waiting prompt, the ``n`` samples of a prompt sharing its prefill."""
        from schoolroom.agents.engines.batching import decode

        t0 = time.perf_counter()
        texts = [self.render(p) for p in prompts]
        ids = self.tokenizer(texts, add_special_tokens=False)["input_ids"]
        rows = decode(self.lm, self.tokenizer, ids, params, self.batch_size, texts, share_prefix=self.share_prefix)
        dt = (time.perf_counter() - t0) / max(1, len(prompts))
        out = []
        for prompt, these in zip(ids, rows):
            cs = []
            for r in these:
                text, stopped = cut_at_stop(self.tokenizer.decode(r.ids, skip_special_tokens=True), params)
                read = r.sample == 0 or not self.share_prefix  # the prompt tokens this row's prefill read
                cs.append(Completion(text=text, prompt_tokens=len(prompt) if read else 0,
                                     completion_tokens=len(r.ids), finish_reason="stop" if stopped else r.finish,
                                     latency_s=dt, token_ids=tuple(r.ids), logprobs=tuple(r.logprobs)))
            out.append(cs if params.temperature > 0 else cs * params.n)
        return out

    # -- scoring
    def score(self, prompts: list[Prompt], completions: list[tuple[int, ...]]) -> list[tuple[float, ...]]:
        """One forward pass per batch of ``batch_size`` rows (right-padded, shortest first); each row's
        log-softmax only over its completion's positions."""
        import torch

        heads = self.tokenizer([self.render(p) for p in prompts], add_special_tokens=False)["input_ids"]
        seqs = [h + list(c) for h, c in zip(heads, completions)]
        pad = self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else 0
        out: list[tuple[float, ...]] = [()] * len(seqs)
        order = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
        for start in range(0, len(order), self.batch_size):
            rows = order[start:start + self.batch_size]
            width = max(len(seqs[i]) for i in rows)
            ids = torch.tensor([seqs[i] + [pad] * (width - len(seqs[i])) for i in rows], device=self.device)
            mask = torch.tensor([[1] * len(seqs[i]) + [0] * (width - len(seqs[i])) for i in rows], device=self.device)
            with torch.inference_mode():
                logits = self.lm(input_ids=ids, attention_mask=mask).logits
            for row, i in enumerate(rows):
                p, c = len(heads[i]), list(completions[i])
                if c:
                    logp = torch.log_softmax(logits[row, p - 1:p - 1 + len(c)].float(), -1)
                    out[i] = tuple(logp.gather(1, torch.tensor(c, device=logp.device)[:, None])[:, 0].tolist())
        return out


def peft_name(version: str) -> str:
    """``version`` as a peft adapter name: peft names torch modules after it, which may not hold a dot
    (``step_dpo@beta=0.5``)."""
    return re.sub(r"\W", "_", version)
