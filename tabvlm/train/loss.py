"""The training loss, the one loss path: what trains the model is what the model tests check."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.model import TabVLM
from tabvlm.tokenizer import IGNORE_INDEX
from tabvlm.train.reading import ReadingHead


class LossModule(nn.Module):
    """TabVLM's forward with a summed token cross-entropy, the LM head applied only where a
    target is: with 12k-token vocabularies the head is most of a small model's compute, and the
    image and prompt tokens (most of a table sample) have no target. With a `reading_head`, also
    the summed reading loss of the image tokens (tabvlm.train.reading). DDP and torch.compile
    wrap this module, so the whole training computation is one forward. With `run_lm=False`
    (stage vlm-reading) only the image tokens and the reading loss are computed; the token loss
    is 0."""

    def __init__(self, model: TabVLM, reading_head: ReadingHead | None = None, run_lm: bool = True):
        super().__init__()
        if not run_lm and reading_head is None:
            raise ValueError("run_lm=False leaves only the reading loss: pass a reading_head")
        self.model = model
        self.reading_head = reading_head
        self.run_lm = run_lm

    def forward(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        segment_ids: torch.Tensor | None = None,
        reading: dict[str, torch.Tensor] | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """(summed cross-entropy over labels != -100, summed reading loss (0 without a head or
        targets), an empty tensor in the logits' dtype: a probe that survives torch.compile, for
        the bf16 check)."""
        m = self.model
        features = None if pixel_values is None else m.encode_images(pixel_values)  # (N, L, C)
        if not self.run_lm:
            reading_loss = self._reading_loss(features, reading)
            probe_dtype = reading_loss.dtype if features is None else features.dtype  # the bf16 probe
            return reading_loss.new_zeros(()), reading_loss, reading_loss.new_empty(0, dtype=probe_dtype)
        embeds = m.embed(input_ids, pixel_values, features=features)  # (B, T, C)
        hidden = m.language_model(embeds, attention_mask, segment_ids)  # (B, T, C)
        targets = labels[:, 1:]  # (B, T-1): token t predicts t+1
        if torch.compiler.is_compiling():
            # a boolean gather has a data-dependent shape (a graph break): head on every position
            logits = m.lm_head(hidden[:, :-1]).flatten(0, 1)  # (B*(T-1), V)
            targets = targets.flatten()
        else:
            keep = targets != IGNORE_INDEX
            logits, targets = m.lm_head(hidden[:, :-1][keep]), targets[keep]  # (N_targets, V)
        loss = F.cross_entropy(logits.float(), targets, ignore_index=IGNORE_INDEX, reduction="sum")
        reading_loss = (
            self._reading_loss(features, reading) if self.reading_head is not None else loss.new_zeros(())
        )
        return loss, reading_loss, logits.new_empty(0)

    def _reading_loss(
        self, features: torch.Tensor | None, reading: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        assert self.reading_head is not None
        m = self.model
        if reading is not None and features is not None:
            embeddings = m.lm_head.weight if m.config.lm.tie_embeddings else None
            return self.reading_head(features, reading, embeddings)
        # a batch of jsonl records only: the head still takes part (DDP expects every grad)
        return sum(p.sum() for p in self.reading_head.parameters()) * 0.0


def mean_token_loss(
    model: TabVLM, input_ids: torch.Tensor, labels: torch.Tensor, **inputs: torch.Tensor
) -> torch.Tensor:
    """Mean next-token cross-entropy over `labels` != IGNORE_INDEX (shifted inside), through
    `LossModule`: for tests and benches that train a bare model. `inputs`: pixel_values,
    segment_ids, attention_mask (default: every token real)."""
    mask = inputs.pop("attention_mask", torch.ones_like(input_ids))
    loss_sum, _, _ = LossModule(model)(input_ids, labels, mask, **inputs)
    return loss_sum / (labels[:, 1:] != IGNORE_INDEX).sum().clamp(min=1)
