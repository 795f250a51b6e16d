"""The hf engine's decoding loop: continuous batching over one KV cache, on any torch device.

Rows (a prompt's sample) share one left-padded cache of at most ``batch_size`` rows. Prompts are taken
shortest first and prefilled together in groups; a group's rows join the running batch as soon as enough rows
have left it (end of text, a stop, or ``max_tokens``), so each step decodes a full batch and no row decodes
padding after its end. ``n`` samples of one prompt are one prefill whose cache is copied ``n`` times.

A row's stop is checked on its newest token only (its text so far is kept token by token), not by decoding
every row's whole text at every step. Greedy rows take the argmax: the tokens of transformers' ``generate``.
A sampled row draws from its own generator, seeded by the call's seed, the prompt's text and the sample's
number, so what it says does not depend on what else was in the batch (nor on batch size, chunks or
replicas).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from transformers import DynamicCache
from transformers.cache_utils import DynamicLayer

from schoolroom.agents.engines.base import Params


@dataclass
class Row:
    prompt: int  # the prompt's index in the call
    sample: int
    ids: list[int] = field(default_factory=list)
    text: str = ""  # the new tokens, decoded one by one (stops are ASCII markers)
    marker_at: int = -1  # where ``stop_after`` starts in ``text``
    finish: str = ""  # "" while decoding, then "stop" or "length"
    generator: torch.Generator | None = None
    logprobs: list[float] = field(default_factory=list)  # of each token, under the distribution it was drawn from

    def add(self, token: int, logprob: float, piece: str, params: Params, eos: set[int]) -> None:
        """Append a token; set ``finish`` when the row is done."""
        start = len(self.text)
        self.ids.append(token)
        self.logprobs.append(logprob)
        self.text += piece
        if token in eos or _stopped(self, start, params):
            self.finish = "stop"
        elif len(self.ids) >= params.max_tokens:
            self.finish = "length"


def _stopped(row: Row, start: int, params: Params) -> bool:
    """Whether the text added at ``start`` completes a stop string, or the line break after ``stop_after``."""
    text = row.text
    if any(text.find(s, max(0, start - len(s) + 1)) >= 0 for s in params.stop):
        return True
    if not params.stop_after:
        return False
    if row.marker_at < 0:
        row.marker_at = text.find(params.stop_after, max(0, start - len(params.stop_after) + 1))
        if row.marker_at < 0:
            return False
    return text.find("\n", max(start, row.marker_at + len(params.stop_after))) >= 0


SPARE = 64  # cache columns reserved ahead: a step writes into them instead of copying the cache


class _Layer(DynamicLayer):
    """One layer's keys and values with room to grow: a decoding step writes its column in place (transformers'
    DynamicLayer concatenates, copying the whole cache at every step: two thirds of a step's time here)."""

    def lazy_initialization(self, keys, values):
        self.dtype, self.device, self.is_initialized = keys.dtype, keys.device, True
        self.length, self._k, self._v = 0, None, None

    def set(self, keys, values, room: int = SPARE) -> None:
        b, h, t, d = keys.shape
        self._k, self._v = keys.new_empty(b, h, t + room, d), values.new_empty(b, h, t + room, d)
        self._k[:, :, :t], self._v[:, :, :t] = keys, values
        self.length = t
        self.keys, self.values = self._k[:, :, :t], self._v[:, :, :t]

    def update(self, keys, values, *args, **kwargs):
        if not self.is_initialized:
            self.lazy_initialization(keys, values)
        if self._k is None:
            self.set(keys, values)
            return self.keys, self.values
        n = self.length + keys.shape[-2]
        if n > self._k.shape[-2]:
            self.set(self.keys, self.values, room=max(SPARE, keys.shape[-2]))
        self._k[:, :, self.length:n], self._v[:, :, self.length:n] = keys, values
        self.length = n
        self.keys, self.values = self._k[:, :, :n], self._v[:, :, :n]
        return self.keys, self.values

    def get_seq_length(self) -> int:
        return self.length if self.is_initialized else 0


def _cache():
    cache = DynamicCache()
    cache.layer_class_to_replicate = _Layer
    return cache


class _Batch:
    """The rows being decoded, their cache, attention mask and next input token. A finished row stays (its steps
    are wasted) until a quarter of the rows are done or new rows join: each removal copies the cache."""

    def __init__(self):
        self.rows: list[Row] = []
        self.cache = None
        self.mask = None  # [rows, cache length]: 1 for real tokens, 0 for padding
        self.next = None  # [rows]: the token each row feeds next

    def live(self) -> int:
        return sum(not r.finish for r in self.rows)

    def join(self, rows: list[Row], cache, mask, next_tokens) -> None:
        self.keep()
        if not self.rows:
            self.rows, self.cache, self.mask, self.next = rows, cache, mask, next_tokens
            return
        length = max(self.mask.shape[1], mask.shape[1])
        for mine, theirs in zip(self.cache.layers, cache.layers):
            mine.set(torch.cat([_pad_left(mine.keys, length), _pad_left(theirs.keys, length)]),
                     torch.cat([_pad_left(mine.values, length), _pad_left(theirs.values, length)]))
        self.mask = torch.cat([F.pad(self.mask, (length - self.mask.shape[1], 0)),
                               F.pad(mask, (length - mask.shape[1], 0))])
        self.rows += rows
        self.next = torch.cat([self.next, next_tokens])

    def keep(self) -> None:
        """Drop the finished rows, and the cache columns every row left has as padding."""
        keep = [i for i, r in enumerate(self.rows) if not r.finish]
        if len(keep) == len(self.rows):
            return
        self.rows = [self.rows[i] for i in keep]
        if not keep:
            self.cache = self.mask = self.next = None
            return
        index = torch.tensor(keep, device=self.mask.device)
        self.mask, self.next = self.mask[index], self.next[index]
        first = int(self.mask.any(0).nonzero()[0])
        self.mask = self.mask[:, first:]
        for layer in self.cache.layers:
            layer.set(layer.keys[index, :, first:], layer.values[index, :, first:])


def _pad_left(t, length: int):
    return F.pad(t, (0, 0, length - t.shape[-2], 0)) if t.shape[-2] < length else t


def _pick(logits, rows: list[Row], params: Params):
    """The next token of every row (argmax when greedy, else a draw from each row's own generator) and its
    log-probability under the distribution it was drawn from: the logits at the temperature, over the top-p
    nucleus (greedy: the model's own distribution)."""
    logits = logits.float()
    if params.temperature <= 0:
        tokens = logits.argmax(-1)
        return tokens, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1)
    logits = logits / params.temperature
    if params.top_p < 1.0:  # as transformers' TopPLogitsWarper
        sorted_logits, order = torch.sort(logits, descending=False)
        drop = sorted_logits.softmax(-1).cumsum(-1) <= 1 - params.top_p
        drop[:, -1] = False
        logits = logits.masked_fill(drop.scatter(1, order, drop), float("-inf"))
    probs = logits.softmax(-1)
    tokens = torch.cat([torch.multinomial(probs[i], 1, generator=r.generator) for i, r in enumerate(rows)])
    return tokens, torch.log_softmax(logits, -1).gather(1, tokens[:, None]).squeeze(1)


class _Call:
    """What every step of one call reads: the model, its prompts and the sampling settings."""

    def __init__(self, lm, tokenizer, prompt_ids: list[list[int]], texts: list[str], params: Params,
                 share_prefix: bool):
        self.lm, self.tokenizer, self.prompt_ids, self.texts, self.params = lm, tokenizer, prompt_ids, texts, params
        self.share_prefix = share_prefix
        self.n = params.n if params.temperature > 0 else 1
        self.eos = set(_ids(lm.generation_config.eos_token_id)) | {tokenizer.eos_token_id}
        seen: dict[str, int] = {}
        self.copies = []  # the how-manieth time this prompt's text appears in the call (its samples differ)
        for t in texts:
            self.copies.append(seen.get(t, 0))
            seen[t] = self.copies[-1] + 1

    def prefill(self, group: list[int]):
        """The group's prompts read at once (left-padded); their first tokens; the cache copied per sample."""
        n, lm = self.n, self.lm
        seqs = [self.prompt_ids[i] for i in group for _ in range(1 if self.share_prefix else n)]
        longest, pad = max(map(len, seqs)), self.tokenizer.pad_token_id
        ids = torch.tensor([[pad] * (longest - len(s)) + s for s in seqs], device=lm.device)
        mask = torch.tensor([[0] * (longest - len(s)) + [1] * len(s) for s in seqs], device=lm.device)
        positions = (mask.cumsum(1) - 1).masked_fill(mask == 0, 1)
        cache = _cache()
        with torch.inference_mode():
            logits = lm(input_ids=ids, attention_mask=mask, position_ids=positions, past_key_values=cache,
                        use_cache=True, logits_to_keep=1).logits[:, -1]
        if self.share_prefix and n > 1:
            for layer in cache.layers:
                layer.set(layer.keys.repeat_interleave(n, 0), layer.values.repeat_interleave(n, 0))
            logits, mask = logits.repeat_interleave(n, 0), mask.repeat_interleave(n, 0)
        rows = [Row(i, j, generator=self.generator(i, j)) for i in group for j in range(n)]
        first, logp = _pick(logits, rows, self.params)
        self.add(rows, first, logp)
        return rows, cache, mask, first

    def generator(self, prompt: int, sample: int) -> torch.Generator | None:
        """A sampled row's own generator, seeded by the call's seed, its prompt's text and copy, and its number."""
        if self.params.temperature <= 0:
            return None
        seed = f"{self.params.seed}\0{self.copies[prompt]}\0{sample}\0{self.texts[prompt]}"
        g = torch.Generator(device=self.lm.device)
        g.manual_seed(zlib.crc32(seed.encode()))
        return g

    def add(self, rows: list[Row], tokens, logprobs) -> None:
        """Each unfinished row takes its token (finished rows still in the batch decode for nothing)."""
        live = [(r, t, lp) for r, t, lp in zip(rows, tokens.tolist(), logprobs.tolist()) if not r.finish]
        pieces = self.tokenizer.batch_decode([[t] for _, t, _ in live], skip_special_tokens=True)
        for (row, token, logprob), piece in zip(live, pieces):
            row.add(token, logprob, piece, self.params, self.eos)


def decode(lm, tokenizer, prompt_ids: list[list[int]], params: Params, batch_size: int, texts: list[str],
           share_prefix: bool = True) -> list[list[Row]]:
    """``n`` rows for each prompt (one when greedy: the caller copies it), in prompt order.

    ``share_prefix=False`` prefills each sample's own copy of its prompt (what ``generate`` with
    ``num_return_sequences`` does): for comparison only.
    """
    call = _Call(lm, tokenizer, prompt_ids, texts, params, share_prefix)
    n = call.n
    waiting = sorted(range(len(prompt_ids)), key=lambda i: (len(prompt_ids[i]), i))
    out: list[list[Row]] = [[] for _ in prompt_ids]
    width = max(batch_size, n)
    batch = _Batch()
    while waiting or batch.live():
        free = width - batch.live()
        if waiting and free >= n and (not batch.live() or free * 4 >= width or len(waiting) * n <= free):
            group, waiting = waiting[:free // n], waiting[free // n:]
            rows, cache, mask, first = call.prefill(group)
            for r in rows:
                out[r.prompt].append(r)
            batch.join(rows, cache, mask, first)
            continue
        if (len(batch.rows) - batch.live()) * 4 >= len(batch.rows):
            batch.keep()
        tokens = batch.next[:, None]
        mask = torch.cat([batch.mask, torch.ones_like(tokens)], dim=1)
        with torch.inference_mode():
            logits = lm(input_ids=tokens, attention_mask=mask, position_ids=batch.mask.sum(1, keepdim=True),
                        past_key_values=batch.cache, use_cache=True).logits[:, -1]
        batch.mask = mask
        batch.next, logp = _pick(logits, batch.rows, params)
        call.add(batch.rows, batch.next, logp)
    for rows in out:
        rows.sort(key=lambda r: r.sample)
    return out


def _ids(x) -> list[int]:
    return [] if x is None else [x] if isinstance(x, int) else list(x)
