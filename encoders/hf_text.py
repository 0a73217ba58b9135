"""transformers text towers: encoder models (BERT family, sentence-transformers folders) and decoder-only
LLMs (GPT-2, Llama, Qwen, ... families), pooled into one vector per text.

Defaults come from the weights' folder: a sentence-transformers folder (``modules.json``,
``1_Pooling/config.json``, ``sentence_bert_config.json``) gives pooling, normalisation and the length
cap — all-MiniLM-L6-v2 thus gets mean pooling, L2 normalisation and 256 tokens. Without one, encoders
default to mean pooling and decoder-only models to last-token pooling. Batches are padded on the right
and the last token is found from the attention mask, so a causal model sees the same positions batched
as alone. ``trust_remote_code`` stays off unless the caller passes it.
"""
from __future__ import annotations

import json
import os
import re
from typing import Any, Sequence

import torch
from transformers import AutoConfig, AutoModel, AutoTokenizer
from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES, MODEL_FOR_MASKED_LM_MAPPING_NAMES

from mmrec.encoders import hub
from mmrec.encoders.base import EncoderSourceError, TextEncoder, TextPreprocess, weights_identity
from mmrec.encoders.registry import EncoderSpec, register


HUB_ID = re.compile(r"[\w.-]+(/[\w.-]+)?")
ST_POOLING = {"pooling_mode_mean_tokens": "mean", "pooling_mode_cls_token": "cls", "pooling_mode_lasttoken": "last"}


def resolve_folder(spec: EncoderSpec) -> str:
    """The local folder for ``spec.arch``: an existing path, or a hub id fetched from the hub or its cache."""
    arch = spec.arch
    path = os.path.expanduser(arch)
    if arch.startswith(("/", "./", "../", "~")):
        if not os.path.isdir(path):
            raise FileNotFoundError(f"{spec.text}: model folder {arch} does not exist")
        return os.path.abspath(path)
    looks_like_hub_id = HUB_ID.fullmatch(arch) is not None
    if os.path.isdir(path):
        if looks_like_hub_id:
            raise EncoderSourceError(
                f"encoder spec {spec.text!r} is ambiguous: {arch!r} is a local folder and a hub repo id; write "
                f"'hf:./{arch}' for the folder, or run from another folder for the hub repo")
        return os.path.abspath(path)
    if not looks_like_hub_id:
        raise FileNotFoundError(f"{spec.text}: model folder {arch} does not exist")
    return hub.fetch_hub_snapshot(arch, what=f"transformers model {arch!r}",
                                  local_hint=f"hf:/path/to/{arch.rsplit('/', 1)[-1]} (a folder from save_pretrained)")


def sentence_transformers_defaults(folder: str) -> dict[str, Any]:
    """Pooling, normalisation and max length declared by a sentence-transformers folder (empty if none)."""
    modules_file = os.path.join(folder, "modules.json")
    if not os.path.isfile(modules_file):
        return {}
    with open(modules_file, encoding="utf-8") as f:
        modules = json.load(f)
    out: dict[str, Any] = {"normalize": any(m.get("type", "").endswith(".Normalize") for m in modules)}
    for module in modules:
        if module.get("type", "").endswith(".Pooling"):
            with open(os.path.join(folder, module["path"], "config.json"), encoding="utf-8") as f:
                pooling_cfg = json.load(f)
            modes = [mode for key, mode in ST_POOLING.items() if pooling_cfg.get(key)]
            if len(modes) != 1 or any(v for k, v in pooling_cfg.items() if k.startswith("pooling_mode")
                                      and k not in ST_POOLING):
                raise ValueError(f"{folder}: unsupported sentence-transformers pooling {pooling_cfg}")
            out["pooling"] = modes[0]
    bert_cfg = os.path.join(folder, "sentence_bert_config.json")
    if os.path.isfile(bert_cfg):
        with open(bert_cfg, encoding="utf-8") as f:
            out["max_length"] = int(json.load(f)["max_seq_length"])
    return out


def is_decoder_only(config: Any) -> bool:
    """True for causal LMs (GPT-2, Llama, Qwen, ...); encoder-decoder models are refused."""
    if getattr(config, "is_encoder_decoder", False):
        raise EncoderSourceError(f"{config.model_type}: encoder-decoder models are not supported as text towers")
    kind = config.model_type
    return kind in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES and kind not in MODEL_FOR_MASKED_LM_MAPPING_NAMES


class HFTextEncoder(TextEncoder):
    """A transformers model plus tokenizer, pooled by `TextPreprocess.pooling` over non-padding tokens."""

    def __init__(self, spec: str, model: torch.nn.Module, tokenizer: Any, text_preprocess: TextPreprocess,
                 weights: dict[str, Any], device: torch.device, dtype: torch.dtype, decoder_only: bool) -> None:
        self.spec, self.tokenizer, self.text_preprocess, self.weights = spec, tokenizer, text_preprocess, weights
        self.device, self.dtype, self.normalized = device, dtype, text_preprocess.normalize
        self.decoder_only = decoder_only
        self.module = model.to(device=device, dtype=dtype).eval().requires_grad_(False)
        self.dim = int(model.config.hidden_size)
        tokenizer.padding_side = "right"  # last-token pooling reads the mask; positions stay 0..len-1
        if tokenizer.pad_token is None:
            fallback = tokenizer.eos_token or tokenizer.unk_token
            if fallback is None:
                raise ValueError(f"{spec}: tokenizer has no pad, eos or unk token to pad batches with")
            tokenizer.pad_token = fallback
        if text_preprocess.append_eos and tokenizer.eos_token_id is None:
            raise ValueError(f"{spec}: append_eos needs a tokenizer with an eos token")

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "decoder_only": self.decoder_only}

    def tokenize(self, texts: Sequence[str]) -> dict[str, torch.Tensor]:
        """Prompted, truncated, right-padded token ids and attention mask for a batch."""
        prep = self.text_preprocess
        prompted = [prep.template.replace("{text}", t) for t in texts]
        if not prep.append_eos:
            return self.tokenizer(prompted, padding=True, truncation=True, max_length=prep.max_length,
                                  return_tensors="pt")
        enc = self.tokenizer(prompted, truncation=True, max_length=prep.max_length - 1)
        enc["input_ids"] = [ids + [self.tokenizer.eos_token_id] for ids in enc["input_ids"]]
        enc["attention_mask"] = [m + [1] for m in enc["attention_mask"]]
        if "token_type_ids" in enc:
            enc["token_type_ids"] = [t + [t[-1] if t else 0] for t in enc["token_type_ids"]]
        return self.tokenizer.pad(enc, padding=True, return_tensors="pt")

    @torch.inference_mode()
    def encode(self, batch: Sequence[str]) -> torch.Tensor:
        """Strings -> ``float32 [N, dim]`` (L2-normalised when `normalized`)."""
        texts = list(batch)
        if not texts:
            return torch.zeros(0, self.dim, device=self.device)
        enc = self.tokenize(texts)
        inputs = {k: enc[k].to(self.device) for k in ("input_ids", "attention_mask", "token_type_ids") if k in enc}
        hidden = self.module(**inputs).last_hidden_state.float()
        mask = inputs["attention_mask"]
        pooling = self.text_preprocess.pooling
        if pooling == "mean":
            m = mask.unsqueeze(-1).to(hidden.dtype)
            out = (hidden * m).sum(1) / m.sum(1).clamp_min(1)
        elif pooling == "cls":
            out = hidden[:, 0]
        else:  # last non-padding token; right padding puts it at length - 1
            last = mask.sum(1).clamp_min(1) - 1
            out = hidden[torch.arange(len(texts), device=hidden.device), last]
        return torch.nn.functional.normalize(out, dim=-1) if self.normalized else out


@register("hf", modalities=("text",), weights_after_at=False)
def build_hf(spec: EncoderSpec, *, modality: str, device: torch.device, dtype: torch.dtype, seed: int,
             pooling: str | None = None, template: str | None = None, max_length: int | None = None,
             normalize: bool | None = None, append_eos: bool = False, trust_remote_code: bool = False) -> HFTextEncoder:
    """A transformers text tower from a folder (``hf:/path``), a hub id, or a folder's config untrained
    (``hf:/path@random``). Unset options come from the folder's sentence-transformers files, else from
    the architecture (mean pooling for encoders, last-token for decoder-only models)."""
    folder = resolve_folder(spec)
    config = AutoConfig.from_pretrained(folder, trust_remote_code=trust_remote_code)
    decoder_only = is_decoder_only(config)
    st = sentence_transformers_defaults(folder)
    model_cap = min(v for v in (getattr(config, "max_position_embeddings", None), 512) if v)
    prep = TextPreprocess(
        max_length=int(max_length or st.get("max_length") or model_cap),
        pooling=pooling or st.get("pooling") or ("last" if decoder_only else "mean"),
        template=template or "{text}",
        normalize=st.get("normalize", False) if normalize is None else normalize,
        append_eos=append_eos)
    tokenizer = AutoTokenizer.from_pretrained(folder, trust_remote_code=trust_remote_code)
    if spec.weights == "random":
        model = AutoModel.from_config(config, trust_remote_code=trust_remote_code)
        weights: dict[str, Any] = {"random": True, "seed": seed, "config": weights_identity(
            os.path.join(folder, "config.json"))}
    else:
        model = AutoModel.from_pretrained(folder, dtype=dtype, trust_remote_code=trust_remote_code)
        weights = weights_identity(folder)
    return HFTextEncoder(spec.text, model, tokenizer, prep, weights, device, dtype, decoder_only)
