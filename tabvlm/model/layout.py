"""The layout model: image + the reader's words in, a grid decision for every word out.

Read, then lay out (../shared/DESIGN.md; the word tokens after TFLOP, UpstageAI/TFLOP). The reader
finds and reads the words; this model only lays them out:

    image (gray, S x S) --conv tower--> feature map (S/16)^2 --pool--> image tokens  (I tokens)
    word i: box (quantised x0 y0 x1 y1 w h) + RoI features under the box + mean of its text's
            token embeddings + its reading-order index, line and column band, the space above /
            below it and the rulings beside it                                    (W tokens)

One transformer runs over [image | words], every token attending both ways (padding words are
nobody's key). The grid head, an MLP on each word's state, gives its `GRID_LOGITS` logits: does
its line start a row, its band a column, is it outside the table, how far does its cell reach
(`tabvlm.layout_grid`). The model computes no loss and knows nothing of assembly:
`tabvlm.train.layout` holds the loss and `tabvlm.layout_decode` turns the logits into a table.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import nn

from tabvlm.errors import ConfigError
from tabvlm.layout_grid import GRID_LOGITS

RULE_BINS = (
    5  # share of a word's span a ruling beside it covers: 0, 1/4 .. 1 (tabvlm.data.layout.ruling_marks)
)
CONFIG_NAME = "config.json"
WEIGHTS_NAME = "model.safetensors"
MODEL_TYPE = "tabvlm-layout"
# Inputs added after a folder was saved start at zero (no effect), so an older folder loads and
# computes what it did: these are the only weights a folder may lack.
NEUTRAL_PARAMS = ("gap_embed.", "rule_embed.")
# What a folder saved while the OTSL-tags head existed may hold besides the grid model: the page's
# line and band counts the tag tokens embedded, and the pointer's temperature. Dropped on load.
REMOVED_PARAMS = ("n_lines_embed.", "n_bands_embed.")
REMOVED_KEYS = ("temperature",)


@dataclass
class LayoutConfig:
    image_size: int = 384  # the gray input is fit (longer side) and padded to this square
    hidden: int = 192
    layers: int = 4
    heads: int = 6
    mlp_ratio: int = 4
    vocab_size: int = 16384  # text embedding rows: the shipped tokenizer's ids
    box_bins: int = 256  # quantisation of coordinates (share of the padded square's side)
    image_pool: int = 2  # image tokens: the S/16 feature map average-pooled by this
    word_order: bool = True  # embed each word's index in reading order (cells' words come in runs)
    grid_hints: bool = True  # embed each word's visual line and column band (tabvlm.data.layout.grid_hints)
    # embed the space above / below / left / right of each word (tabvlm.data.layout.vertical_gaps,
    # horizontal_gaps; a folder saved with two gap embeddings loads the other two at zero)
    line_gaps: bool = True
    roi_points: int = 3  # RoI pooling samples roi_points^2 points inside each word's box
    max_words: int = 768
    max_tags: int = 1024  # training tables' limit in OTSL tags, rows x (cols + 1) + 1 (`fits_model`)
    max_rows: int = 128
    max_cols: int = 64
    rulings: bool = True  # embed the ink of a ruling beside each word (tabvlm.data.layout.ruling_marks)
    # The head: "grid" (per-word corrections of the geometric grid, tabvlm.layout_grid), the only
    # one; the key stays so that config.json files and recipes naming it keep loading.
    output: str = "grid"

    def __post_init__(self) -> None:
        if self.output == "tags":
            raise ConfigError(
                "model.output: tags: the OTSL-tags head (tag decoder + pointer) was removed; "
                "the layout model needs the grid head (output: grid, configs/layout-grid.yaml)"
            )
        if self.output != "grid":
            raise ConfigError(f"model.output: expected 'grid', found {self.output!r}")
        if self.hidden % self.heads:
            raise ConfigError(f"model.hidden ({self.hidden}) must be divisible by model.heads ({self.heads})")
        if self.image_size % (16 * self.image_pool):
            raise ConfigError(
                f"model.image_size ({self.image_size}) must be a multiple of 16 x image_pool ({self.image_pool})"
            )

    @property
    def feature_side(self) -> int:
        return self.image_size // 16

    @property
    def image_tokens(self) -> int:
        return (self.feature_side // self.image_pool) ** 2


class ConvTower(nn.Module):
    """Four stride-2 3x3 convolutions, 1 -> hidden channels: a (B,1,S,S) page -> (B,hidden,S/16,S/16).
    The image only has to show rulings, shading and alignment; glyphs are the reader's."""

    def __init__(self, hidden: int):
        super().__init__()
        chans = [1, 32, 64, 128, hidden]
        self.convs = nn.ModuleList(nn.Conv2d(a, b, 3, stride=2, padding=1) for a, b in zip(chans, chans[1:]))
        self.norm = nn.GroupNorm(1, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, conv in enumerate(self.convs):
            x = conv(x)
            if i < len(self.convs) - 1:
                x = F.gelu(x)
        return self.norm(x)


class Block(nn.Module):
    """Pre-norm transformer block; attention through SDPA with an explicit boolean mask."""

    def __init__(self, cfg: LayoutConfig):
        super().__init__()
        d = cfg.hidden
        self.heads = cfg.heads
        self.norm1 = nn.LayerNorm(d)
        self.qkv = nn.Linear(d, 3 * d)
        self.proj = nn.Linear(d, d)
        self.norm2 = nn.LayerNorm(d)
        self.fc1 = nn.Linear(d, cfg.mlp_ratio * d)
        self.fc2 = nn.Linear(cfg.mlp_ratio * d, d)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """x (B,T,d); mask (B,1,T,T) True where a query may attend."""
        B, T, d = x.shape
        q, k, v = self.qkv(self.norm1(x)).view(B, T, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        y = F.scaled_dot_product_attention(q, k, v, attn_mask=mask)  # (B,H,T,hd)
        x = x + self.proj(y.transpose(1, 2).reshape(B, T, d))
        return x + self.fc2(F.gelu(self.fc1(self.norm2(x))))


class LayoutModel(nn.Module):
    def __init__(self, cfg: LayoutConfig):
        super().__init__()
        self.config = cfg
        d = cfg.hidden
        self.tower = ConvTower(d)
        side = cfg.feature_side // cfg.image_pool
        self.image_pos = nn.Parameter(torch.zeros(1, side * side, d))
        # image, word; a third row (the removed tag tokens') is unused, kept so saved folders load
        self.type_embed = nn.Embedding(3, d)
        self.box_embed = nn.ModuleList(nn.Embedding(cfg.box_bins, d) for _ in range(6))  # x0 y0 x1 y1 w h
        self.roi_proj = nn.Linear(d, d)
        self.text_embed = nn.EmbeddingBag(cfg.vocab_size, d, mode="mean")
        self.order_embed = nn.Embedding(cfg.max_words, d) if cfg.word_order else None
        if cfg.grid_hints:  # a word's line and band
            self.line_embed = nn.Embedding(cfg.max_rows, d)
            self.band_embed = nn.Embedding(cfg.max_cols, d)
        if cfg.line_gaps:  # 32 bins of an eighth of a height, and "nothing there"
            self.gap_embed = nn.ModuleList(nn.Embedding(33, d) for _ in range(4))
            for emb in self.gap_embed:  # zero: a model trained without them starts unchanged
                nn.init.zeros_(emb.weight)
        if cfg.rulings:  # above, below, left, right; zero: a model trained without them starts unchanged
            self.rule_embed = nn.ModuleList(nn.Embedding(RULE_BINS, d) for _ in range(4))
            for emb in self.rule_embed:
                nn.init.zeros_(emb.weight)
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.layers))
        self.norm = nn.LayerNorm(d)
        self.grid_head = nn.Sequential(nn.Linear(d, d), nn.GELU(), nn.Linear(d, GRID_LOGITS))
        nn.init.normal_(self.image_pos, std=0.02)

    # -- the prefix: image tokens and word tokens -------------------------------------------
    def embed_prefix(
        self,
        pixels: torch.Tensor,
        boxes: torch.Tensor,
        text_ids: torch.Tensor,
        text_offsets: torch.Tensor,
        lines: torch.Tensor | None = None,
        bands: torch.Tensor | None = None,
        gaps: torch.Tensor | None = None,
        rules: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """pixels (B,1,S,S) in [0,1] (1 = white); boxes (B,W,4) in [0,1] of the square; the words'
        token ids flattened (N,) with `text_offsets` (B*W,) the start of each word's ids (an
        EmbeddingBag's input; a padding word has an empty bag). -> (B, I+W, d)."""
        cfg = self.config
        B, W, _ = boxes.shape
        fmap = self.tower(1.0 - pixels)  # white paper -> 0; (B,d,F,F)
        img = F.avg_pool2d(fmap, cfg.image_pool).flatten(2).transpose(1, 2)  # (B,I,d)
        img = img + self.image_pos + self.type_embed.weight[0]
        x0, y0, x1, y1 = boxes.unbind(-1)
        q = cfg.box_bins - 1
        coords = [x0, y0, x1, y1, (x1 - x0), (y1 - y0)]
        box = sum(emb((c.clamp(0, 1) * q).round().long()) for emb, c in zip(self.box_embed, coords))
        # RoI: roi_points^2 bilinear samples inside each box, averaged.
        t = (torch.arange(cfg.roi_points, device=boxes.device, dtype=boxes.dtype) + 0.5) / cfg.roi_points
        gx = x0[..., None] + (x1 - x0)[..., None] * t  # (B,W,P)
        gy = y0[..., None] + (y1 - y0)[..., None] * t
        grid = torch.stack(torch.broadcast_tensors(gx[..., None, :], gy[..., :, None]), -1)  # (B,W,P,P,2)
        grid = grid.reshape(B, W, -1, 2) * 2 - 1
        roi = (
            F.grid_sample(fmap, grid.to(fmap.dtype), align_corners=False).mean(-1).transpose(1, 2)
        )  # (B,W,d)
        text = self.text_embed(text_ids, text_offsets).view(B, W, -1)
        words = box + self.roi_proj(roi) + text.to(box.dtype) + self.type_embed.weight[1]
        if cfg.grid_hints and lines is not None:
            words = words + self.line_embed(lines.clamp(max=cfg.max_rows - 1))
            words = words + self.band_embed(bands.clamp(max=cfg.max_cols - 1))
        if cfg.line_gaps and gaps is not None:
            words = words + sum(emb(gaps[..., k]) for k, emb in enumerate(self.gap_embed[: gaps.shape[-1]]))
        if cfg.rulings and rules is not None:
            words = words + sum(emb(rules[..., k]) for k, emb in enumerate(self.rule_embed))
        if self.order_embed is not None:
            words = words + self.order_embed(
                torch.arange(W, device=boxes.device).clamp(max=cfg.max_words - 1)
            )
        return torch.cat([img, words], 1)

    def run(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """The blocks over x (B,T,d) with mask (B,1,T,T); normed states."""
        for block in self.blocks:
            x = block(x, mask)
        return self.norm(x)

    def grid_logits(
        self,
        pixels: torch.Tensor,
        boxes: torch.Tensor,
        word_mask: torch.Tensor,
        text_ids: torch.Tensor,
        text_offsets: torch.Tensor,
        lines: torch.Tensor,
        bands: torch.Tensor,
        gaps: torch.Tensor | None = None,
        rules: torch.Tensor | None = None,
        **_: torch.Tensor,
    ) -> torch.Tensor:
        """(B, W, GRID_LOGITS): the grid head over the prefix, which attends both ways (the
        extra keywords of a collated batch are ignored)."""
        prefix = self.embed_prefix(pixels, boxes, text_ids, text_offsets, lines, bands, gaps, rules)
        B, P, _ = prefix.shape
        keys = prefix_keys(self.config.image_tokens, word_mask)
        h = self.run(prefix, keys[:, None, None, :].expand(B, 1, P, P))
        return self.grid_head(h[:, P - boxes.shape[1] :])

    # -- weights on disk ----------------------------------------------------------------------
    def save_pretrained(self, folder: str | Path) -> None:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_NAME), metadata={"format": "pt"})
        cfg = {"model_type": MODEL_TYPE, **asdict(self.config)}
        (folder / CONFIG_NAME).write_text(json.dumps(cfg, indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, folder: str | Path) -> LayoutModel:
        """The model of `folder` (weights of the removed tags head's inputs, `REMOVED_PARAMS`,
        are dropped; inputs newer than the folder, `NEUTRAL_PARAMS`, start neutral)."""
        folder = Path(folder)
        model = cls(load_layout_config(folder))
        state = load_file(str(folder / WEIGHTS_NAME))
        state = {k: v for k, v in state.items() if not k.startswith(REMOVED_PARAMS)}
        missing, unexpected = model.load_state_dict(state, strict=False)
        absent = [k for k in missing if not k.startswith(NEUTRAL_PARAMS)]
        if absent or unexpected:
            raise ConfigError(
                f"{folder}: its weights do not fit this model (missing {absent[:5]}, unknown {unexpected[:5]})"
            )
        return model.eval()


def load_layout_config(folder: str | Path) -> LayoutConfig:
    """The LayoutConfig of a model folder (ConfigError when it holds another kind of model)."""
    path = Path(folder) / CONFIG_NAME
    try:
        raw = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"{path}: cannot read the model config ({e})") from e
    if raw.pop("model_type", None) != MODEL_TYPE:
        raise ConfigError(f"{path}: not a {MODEL_TYPE} model")
    if raw.get("output", "tags") == "tags":  # a folder without the key predates the grid head
        raise ConfigError(
            f"{path}: a model of the OTSL-tags head (output: tags), which was removed; "
            "the layout model needs a grid model (output: grid, configs/layout-grid.yaml)"
        )
    for key in REMOVED_KEYS:
        raw.pop(key, None)
    known = set(LayoutConfig.__dataclass_fields__)
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"{path}: unknown keys {unknown}")
    return LayoutConfig(**raw)


def is_layout_model(folder: str | Path) -> bool:
    """Whether `folder` holds a layout model (its config.json says model_type tabvlm-layout)."""
    try:
        return json.loads((Path(folder) / CONFIG_NAME).read_text()).get("model_type") == MODEL_TYPE
    except (OSError, ValueError):
        return False


def prefix_keys(image_tokens: int, word_mask: torch.Tensor) -> torch.Tensor:
    """(B, I+W) bool: the prefix positions a query may attend to (every image token, the real words)."""
    ones = torch.ones(word_mask.shape[0], image_tokens, dtype=torch.bool, device=word_mask.device)
    return torch.cat([ones, word_mask], 1)
