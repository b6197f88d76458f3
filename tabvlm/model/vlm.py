"""TabVLM: vision tower -> connector -> image tokens spliced into the LM's token sequence.

The prompt holds exactly `config.image_tokens` `<|image_pad|>` tokens (id `config.image_token_id`)
per image; their embeddings are replaced, in order, by the projected image features. The splice
is shape-static (`masked_scatter`), and a count mismatch is an error, never a silent truncation.

Submodules (`vision_model`, `connector`, `language_model`, `lm_head`) map one to one onto
transformers' Cohere2Vision, so the export (`tabvlm.hf.export`) is a rename. Weights are saved as safetensors
with `config.json` beside them.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from tabvlm.config import to_dict
from tabvlm.errors import TabVLMError
from tabvlm.model.config import ModelConfig, load_model_config
from tabvlm.model.lm import KVCache, LanguageModel
from tabvlm.model.projector import Connector
from tabvlm.model.vision import ConvStem, VisionTransformer

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
TOKENIZER_NAME = "tokenizer.json"


class ImageTokenMismatchError(TabVLMError):
    """The prompt's `<|image_pad|>` count does not match the images given."""


@dataclass
class VLMOutput:
    """logits (B, T, V). The training loss is `tabvlm.train.loss.LossModule`'s, the one loss path."""

    logits: torch.Tensor


class TabVLM(nn.Module):
    """The table-to-HTML vision-language model."""

    def __init__(self, config: ModelConfig):
        """A randomly initialised model. Reads nothing from disk: pretrained backbones
        (`config.vision.pretrained` / `config.lm.pretrained`) are loaded by
        `tabvlm.hf.load.init_model`, saved weights by `from_pretrained`."""
        super().__init__()
        self.config = config
        self.vision_model = VisionTransformer(config.vision)
        self.connector = Connector(config)
        self.language_model = LanguageModel(config.lm)
        self.lm_head = nn.Linear(config.lm.hidden_size, config.lm.vocab_size, bias=False)
        self.apply(self._init_weights)
        if config.lm.tie_embeddings:
            self.lm_head.weight = self.language_model.embed_tokens.weight

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        # GPT-2 style: small normal weights, zero biases; norms keep their ones/zeros.
        if isinstance(module, (nn.Linear, nn.Conv2d, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)
        if isinstance(module, (nn.Linear, nn.Conv2d)) and module.bias is not None:
            nn.init.zeros_(module.bias)
        if isinstance(module, ConvStem):  # `apply` visits it after its convolutions: its own init wins
            module.reset_parameters()

    @property
    def image_tokens(self) -> int:
        """LM tokens one image becomes."""
        return self.config.image_tokens

    @property
    def max_positions(self) -> int:
        """Positions the LM holds (its RoPE table): prompt + generated tokens never exceed it."""
        return self.config.lm.max_position_embeddings

    def encode_images(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(N, 3, S, S) pixels -> (N, image_tokens, lm_hidden) image token embeddings."""
        size = self.config.vision.image_size
        if pixel_values.dim() != 4 or tuple(pixel_values.shape[1:]) != (3, size, size):
            raise TabVLMError(
                f"pixel_values has shape {tuple(pixel_values.shape)}, expected (N, 3, {size}, {size})"
            )
        return self.connector(self.vision_model(pixel_values))  # (N, image_tokens, C)

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        check: bool = True,
        features: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Token embeddings (B, T, C) with the image features spliced over the `<|image_pad|>` slots.

        Images fill the slots in order, row by row. `check` compares the counts (one host sync);
        it is skipped while `torch.compile` traces, to keep the graph whole. `features`: the
        images' `encode_images(pixel_values)` when the caller has it already (training uses it).
        """
        embeds = self.language_model.embed_tokens(input_ids)  # (B, T, C)
        is_image = input_ids == self.config.image_token_id  # (B, T)
        n_images = 0 if pixel_values is None else pixel_values.shape[0]
        if check and not torch.compiler.is_compiling():
            found = int(is_image.sum())
            if found != n_images * self.image_tokens:
                raise ImageTokenMismatchError(
                    f"prompt has {found} <|image_pad|> tokens for {n_images} image(s) of "
                    f"{self.image_tokens} tokens each (expected {n_images * self.image_tokens})"
                )
        if pixel_values is None:
            return embeds
        if features is None:
            features = self.encode_images(pixel_values)  # (N, image_tokens, C)
        return embeds.masked_scatter(is_image[..., None], features.to(embeds.dtype))  # (B, T, C)

    def forward(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        cache: KVCache | None = None,
        segment_ids: torch.Tensor | None = None,
        logits_to_keep: int = 0,
    ) -> VLMOutput:
        """Logits (B, T, V) for input_ids (B, T).

        attention_mask: (B, past+T), 1 = real token, left padding allowed; positions are
        cumsum(mask) - 1. cache: keys/values are appended, so pass only the new tokens.
        segment_ids: (B, T) sample index of each token in packed training rows (no cache).
        logits_to_keep: N > 0 computes logits (B, N, V) for the last N positions only (generation
        needs just the last; the head over a whole prompt is a large matmul); 0 = all.
        """
        # Decode steps (cache already filled, no new images) skip the count check and its sync.
        check = pixel_values is not None or cache is None or cache.length == 0
        embeds = self.embed(input_ids, pixel_values, check=check)
        hidden = self.language_model(embeds, attention_mask, segment_ids, cache)  # (B, T, C)
        if logits_to_keep > 0:
            hidden = hidden[:, -logits_to_keep:]  # (B, N, C)
        logits = self.lm_head(hidden)  # (B, T or N, V)
        return VLMOutput(logits=logits)

    def new_cache(
        self, batch: int, max_len: int, device: torch.device | None = None, dtype: torch.dtype | None = None
    ) -> KVCache:
        """An empty KV cache for `batch` rows of up to `max_len` positions."""
        return self.language_model.new_cache(batch, max_len, device=device, dtype=dtype)

    def num_parameters(self) -> dict[str, int]:
        """Parameter counts: vision, projector, lm (head included unless tied), total."""

        def count(module: nn.Module) -> int:
            return sum(p.numel() for p in module.parameters())

        lm = count(self.language_model)
        if not self.config.lm.tie_embeddings:
            lm += self.lm_head.weight.numel()
        return {
            "vision": count(self.vision_model),
            "projector": count(self.connector),
            "lm": lm,
            "total": count(self),  # parameters() yields a tied weight once
        }

    def save_pretrained(self, directory: str | Path, tokenizer: Any = None) -> None:
        """Write model.safetensors + config.json (+ tokenizer.json via `tokenizer.save`)."""
        if not isinstance(self.lm_head, nn.Linear):
            raise TabVLMError(
                "this model went through the CPU decode transform (tabvlm.model.decode), which is "
                "inference-only: save the model as loaded, before the transform"
            )
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous().cpu() for k, v in self.state_dict().items()}
        if self.config.lm.tie_embeddings:
            del state["lm_head.weight"]  # the same tensor as embed_tokens: stored once
        save_file(state, str(directory / WEIGHTS_NAME), metadata={"format": "pt"})
        (directory / CONFIG_NAME).write_text(
            json.dumps(to_dict(self.config), indent=2) + "\n", encoding="utf-8"
        )
        if tokenizer is not None:
            tokenizer.save(str(directory / TOKENIZER_NAME))

    @classmethod
    def from_pretrained(
        cls, directory: str | Path, device: torch.device | str | None = None, dtype: torch.dtype | None = None
    ) -> TabVLM:
        """Load a folder written by `save_pretrained`, in eval mode."""
        directory = Path(directory)
        if not directory.is_dir():
            raise TabVLMError(f"{directory}: no such model folder")
        for name in (CONFIG_NAME, WEIGHTS_NAME):
            if not (directory / name).is_file():
                raise TabVLMError(
                    f"{directory}: missing {name} (a model folder holds {CONFIG_NAME} and {WEIGHTS_NAME})"
                )
        # The saved weights already hold any pretrained backbones: no need to read their folders.
        model = cls(load_model_config(directory / CONFIG_NAME))
        weights = directory / WEIGHTS_NAME
        try:
            state = load_file(str(weights), device="cpu")
        except Exception as e:  # safetensors raises its own SafetensorError, or OSError
            raise TabVLMError(
                f"{weights}: not a readable safetensors file ({e}); truncated or overwritten?"
            ) from e
        problem = _state_mismatch(model, state)
        if problem:
            raise TabVLMError(f"{weights}: weights do not match {directory / CONFIG_NAME}: {problem}")
        model.load_state_dict(state, strict=False)
        return model.to(device=device, dtype=dtype).eval()


def _state_mismatch(model: TabVLM, state: dict[str, torch.Tensor]) -> str:
    """What differs between a weights file and the model its config builds, in one line ("" when
    they match): the first tensor of another shape, then counts of missing and unexpected ones."""
    expected = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    if model.config.lm.tie_embeddings:
        expected.pop("lm_head.weight")  # stored once, as the embeddings
    found = {k: tuple(v.shape) for k, v in state.items()}
    shaped = [k for k in expected if k in found and found[k] != expected[k]]
    missing = [k for k in expected if k not in found]
    unexpected = [k for k in found if k not in expected]
    parts = []
    if shaped:
        k = shaped[0]
        more = f" (and {len(shaped) - 1} more tensors of other shapes)" if len(shaped) > 1 else ""
        parts.append(f"{k} is {list(found[k])} in the file, {list(expected[k])} by the config{more}")
    for what, keys in (("missing", missing), ("unexpected", unexpected)):
        if keys:
            parts.append(f"{len(keys)} {what} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
    return "; ".join(parts)
