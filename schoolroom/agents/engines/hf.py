"""Hugging Face transformers engine: CPU or GPU, batched with left padding; the default."""

from __future__ import annotations

import time

from schoolroom.agents.engines.base import Completion, Engine, Params, Prompt, cut_at_stop, render_prompt


class _AfterMarker:
    """Per-row stop: the row's new text holds ``marker`` and then a line break (its answer line is done)."""

    def __init__(self, tokenizer, marker: str, prompt_len: int):
        self.tok, self.marker, self.start = tokenizer, marker, prompt_len

    def __call__(self, input_ids, scores, **kwargs):
        import torch

        done = []
        for row in input_ids[:, self.start:]:
            text = self.tok.decode(row, skip_special_tokens=True)
            i = text.find(self.marker)
            done.append(i >= 0 and "\n" in text[i + len(self.marker):])
        return torch.tensor(done, device=input_ids.device)


class HFEngine(Engine):
    name = "hf"

    def __init__(self, model: str = "smollm2-135m-instruct", device: str = "cpu", dtype: str = "float32",
                 batch_size: int = 16, threads: int | None = None):
        import torch

        from schoolroom import models

        if threads:
            torch.set_num_threads(threads)
        self.model = model
        self.device = device
        self.batch_size = batch_size
        self.tokenizer, self.lm, self.source = models.load(model, device=device, dtype=dtype)
        self.base = self.lm
        self.adapter = None

    # -- prompts
    def render(self, prompt: Prompt) -> str:
        return render_prompt(self.tokenizer, prompt)

    # -- adapters
    def load_adapter(self, version: str, path: str) -> None:
        """Generate with the peft adapter in ``path`` from now on (``version`` names it in Attempts)."""
        from peft import PeftModel

        if self.lm is self.base:
            self.lm = PeftModel.from_pretrained(self.base, path, adapter_name=version).eval()
        elif version != self.adapter:
            old = self.adapter
            self.lm.load_adapter(path, adapter_name=version)
            self.lm.set_adapter(version)
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
        import torch

        texts = [self.render(p) for p in prompts]
        order = sorted(range(len(texts)), key=lambda i: len(texts[i]))  # similar lengths share a batch
        out: list[list[Completion]] = [[] for _ in texts]
        sample = params.temperature > 0
        per_batch = max(1, self.batch_size // params.n) if sample else self.batch_size
        for start in range(0, len(order), per_batch):
            idx = order[start:start + per_batch]
            t0 = time.perf_counter()
            enc = self.tokenizer([texts[i] for i in idx], return_tensors="pt", padding=True,
                                 add_special_tokens=False).to(self.device)
            kwargs = dict(max_new_tokens=params.max_tokens, pad_token_id=self.tokenizer.pad_token_id,
                          num_return_sequences=params.n if sample else 1)
            if sample:
                torch.manual_seed(params.seed + start)
                kwargs.update(do_sample=True, temperature=params.temperature, top_p=params.top_p)
            else:
                kwargs.update(do_sample=False, temperature=None, top_p=None, top_k=None)
            if params.stop:
                kwargs.update(stop_strings=list(params.stop), tokenizer=self.tokenizer)
            if params.stop_after:
                kwargs["stopping_criteria"] = [_AfterMarker(self.tokenizer, params.stop_after,
                                                            enc["input_ids"].shape[1])]
            with torch.inference_mode():
                gen = self.lm.generate(**enc, **kwargs)
            new = gen[:, enc["input_ids"].shape[1]:]
            dt = (time.perf_counter() - t0) / len(idx)
            copies = params.n if sample else 1
            for row in range(new.shape[0]):
                i = idx[row // copies]
                ids = new[row]
                n_tokens = int((ids != self.tokenizer.pad_token_id).sum())
                eos = bool((ids == self.tokenizer.eos_token_id).any())
                text = self.tokenizer.decode(ids, skip_special_tokens=True)
                text, stopped = cut_at_stop(text, params)
                prompt_tokens = int(enc["attention_mask"][row // copies].sum()) if row % copies == 0 else 0
                done = "stop" if eos or stopped else "length"
                c = Completion(text=text, prompt_tokens=prompt_tokens, completion_tokens=n_tokens,
                               finish_reason=done, latency_s=dt)
                out[i].extend([c] * (params.n if not sample else 1))
        return out
