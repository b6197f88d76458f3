"""The reading head: an auxiliary loss that makes each image token say what text lies under it.

`train.reading_loss > 0` adds, to the LM's loss, a linear head on the image tokens (the
connector's output, what the LM reads) that predicts the token's dense reading targets
(tabvlm.data.reading): a multi-hot of the characters under it (binary cross-entropy, summed over
classes) and the row and column of its cell (cross-entropy where a cell is). The head is part of
training only: it lives in the training checkpoints' state, never in the model folder.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from tabvlm.data.reading import MAX_INDEX, N_CHAR_CLASSES
from tabvlm.tokenizer import IGNORE_INDEX


class ReadingHead(nn.Module):
    """Image tokens (N, L, C) -> per-image reading loss."""

    def __init__(self, hidden_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden_size, N_CHAR_CLASSES + 2 * MAX_INDEX)
        nn.init.normal_(self.proj.weight, std=0.02)
        nn.init.zeros_(self.proj.bias)
        # A class is rarely set under a token (a few of thousands): start every class at the
        # prior 1 / N_CHAR_CLASSES, or the first steps' gradient is mostly the logits learning
        # to say "absent".
        prior = 1.0 / N_CHAR_CLASSES
        nn.init.constant_(self.proj.bias[:N_CHAR_CLASSES], math.log(prior / (1 - prior)))

    def forward(
        self, features: torch.Tensor, targets: dict[str, torch.Tensor], embeddings: torch.Tensor | None = None
    ) -> torch.Tensor:
        """The loss summed over the images that have targets (`targets["has"]`), each image's
        loss being its tokens' mean character BCE plus the mean row and column cross-entropies,
        plus, with `embeddings` (V, C: the LM's tied token embeddings), the mean cross-entropy of `features @ embeddings.T` against the LM tokens of the cell
        each image token lies in: image tokens learn to look like the text they show, which
        the LM then only has to copy."""
        logits = self.proj(features.float())  # (N, L, N_CHAR_CLASSES + 64)
        chars, rows, cols = logits.split([N_CHAR_CLASSES, MAX_INDEX, MAX_INDEX], dim=-1)
        per_image = (
            F.binary_cross_entropy_with_logits(chars, targets["chars"].float(), reduction="none")
            .sum(-1)
            .mean(-1)
        )  # (N,)
        for pred, target in ((rows, targets["row"]), (cols, targets["col"])):
            ce = F.cross_entropy(pred.transpose(1, 2), target, ignore_index=IGNORE_INDEX, reduction="none")
            valid = (target != IGNORE_INDEX).sum(-1).clamp(min=1)  # (N,)
            per_image = per_image + ce.sum(-1) / valid
        if embeddings is not None:
            tokens = targets["tokens"]  # (N, L, K)
            where = (tokens != IGNORE_INDEX).any(-1)  # (N, L): image tokens inside a cell with text
            token_logits = (features[where] @ embeddings.t()).float()  # (M, V)
            picked = tokens[where]  # (M, K)
            logp = token_logits.log_softmax(-1).gather(1, picked.clamp(min=0))  # (M, K)
            k_valid = picked != IGNORE_INDEX
            per_token = -(logp * k_valid).sum(-1) / k_valid.sum(-1)  # (M,): mean over the cell's ids
            image_of = where.nonzero()[:, 0]  # (M,)
            sums = per_image.new_zeros(per_image.shape).index_add(0, image_of, per_token)
            counts = per_image.new_zeros(per_image.shape).index_add(0, image_of, torch.ones_like(per_token))
            per_image = per_image + sums / counts.clamp(min=1)
        return (per_image * targets["has"]).sum()


@torch.no_grad()
def token_read_rate(
    features: torch.Tensor, tokens: torch.Tensor, embeddings: torch.Tensor
) -> tuple[int, int]:
    """How far a tower reads, without decoding: of the image tokens that lie in a cell with text
    (`tokens`, (N, L, K): the reading targets' cell tokens), how many have their nearest LM
    token (top-1 of `features @ embeddings.T`) among their cell's tokens. This is what the
    head's token term teaches and what the LM can then copy. (hits, image tokens in text)."""
    where = (tokens != IGNORE_INDEX).any(-1)  # (N, L)
    top = (features[where].float() @ embeddings.float().t()).argmax(-1)  # (M,)
    hits = (tokens[where] == top[:, None]).any(-1)
    return int(hits.sum()), int(where.sum())
