"""The table grammar for constrained decoding: only tokens that keep the output a well-formed table.

The grammar is the canonical HTML that `tabvlm.tables.html.to_html` emits:

    <table> ( <thead> ROW+ </thead> <tbody> ROW* </tbody> | <tbody> ROW+ </tbody> ) </table>
    ROW  = <tr> CELL* </tr>       (the first row of the table: CELL+)
    CELL = <td [ colspan="N"][ rowspan="N"]> TEXT </td>        N = 2..99 (1 is not written)
    TEXT = words separated by single spaces; a word is bytes other than < > & space and
           control characters, or &amp; &lt; &gt;

and then only an end-of-sequence token. Nesting depth is fixed (table > section > tr > td), so
the grammar is regular: a small byte-level DFA. Because it runs over each token's *bytes*, a
byte-level token that is half of a UTF-8 character is simply text.

Everything per-step is precomputed once per vocabulary, with numpy over all tokens at once:
`next_state[s, t]` (the DFA state after token t from state s; 0 = dead) and `cost[s, t]` (the
fewest tokens that can still close the table after t). A decode step then is one row gather for the
mask and one table lookup for the new state, so the overhead is a few microseconds a sequence.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import torch

from tabvlm.errors import TabVLMError

if TYPE_CHECKING:
    from tabvlm.tokenizer import TableTokenizer

DEAD, FINAL, DONE = 0, 1, 2  # fixed state ids; FINAL = `</table>` seen, DONE = EOS emitted after it
_UNREACHABLE = np.iinfo(np.int32).max // 4


def _grammar() -> dict[str, dict[str, str]]:
    """Node -> {literal: next node}. Literals are ASCII; '@...' names a byte class.

    Within a node no literal is a prefix of another, and the byte classes never share a first byte
    with a literal, so a DFA state is just (node, bytes of a literal consumed so far)."""
    g: dict[str, dict[str, str]] = {
        "start": {"<table>": "sections"},
        "sections": {"<thead>": "H.rows1", "<tbody>": "B.rows1"},
        "after_thead": {"<tbody>": "B.rows"},
        "after_tbody": {"</table>": "final"},
        "final": {},
    }
    for sec, close, after in (("H", "</thead>", "after_thead"), ("B", "</tbody>", "after_tbody")):
        p = sec + "."
        # A table's first row holds a cell; a later row may be empty (covered by rowspans above).
        g[p + "rows1"] = {"<tr>": p + "cells1"}
        g[p + "rows"] = {"<tr>": p + "cells", close: after}
        g[p + "cells1"] = {"<td": p + "attr"}
        g[p + "cells"] = {"<td": p + "attr", "</tr>": p + "rows"}
        g[p + "attr"] = {">": p + "text", ' colspan="': p + "cs0", ' rowspan="': p + "rs0"}
        g[p + "attr_rs"] = {">": p + "text", ' rowspan="': p + "rs0"}
        g[p + "attr_end"] = {">": p + "text"}
        for span, then in (("cs", "attr_rs"), ("rs", "attr_end")):
            # a span is written only when > 1: 2..9 or 10..99
            g[p + span + "0"] = {"@two_to_nine": p + span + "1", "@one": p + span + "1x"}
            g[p + span + "1x"] = {"@digit": p + span + "2"}
            g[p + span + "1"] = {"@digit": p + span + "2", '"': p + then}
            g[p + span + "2"] = {'"': p + then}
        # canonical text: no leading, trailing or doubled space, no other whitespace
        g[p + "text"] = {"@word": p + "word", "&": p + "entity", "</td>": p + "cells"}
        g[p + "word"] = {"@word": p + "word", " ": p + "space", "&": p + "entity", "</td>": p + "cells"}
        g[p + "space"] = {"@word": p + "word", "&": p + "entity"}
        g[p + "entity"] = {"amp;": p + "word", "lt;": p + "word", "gt;": p + "word"}
    return g


_CLASSES = {
    "@one": frozenset(b"1"),
    "@two_to_nine": frozenset(b"23456789"),
    "@digit": frozenset(b"0123456789"),
    "@word": frozenset(range(32, 256)) - frozenset(b" <>&\x7f"),
}


def build_dfa() -> tuple[np.ndarray, list[tuple[str, bytes]], int]:
    """Explore the grammar's byte DFA. Returns (trans (S, 257) int32, state names, start id).

    Column 256 is the identity ("no more bytes"), used to pad tokens to one length."""
    grammar = _grammar()
    names: list[tuple[str, bytes]] = [("dead", b""), ("final", b""), ("done", b"")]
    index = {name: i for i, name in enumerate(names)}

    def step(node: str, prefix: bytes, byte: int) -> tuple[str, bytes] | None:
        rules = grammar[node]
        new = prefix + bytes([byte])
        for lit, target in rules.items():
            if lit.startswith("@"):
                continue
            b = lit.encode()
            if b == new:
                return (target, b"")
            if b.startswith(new):
                return (node, new)
        if not prefix:
            for cls, target in rules.items():
                if cls.startswith("@") and byte in _CLASSES[cls]:
                    return (target, b"")
        return None

    rows: dict[int, list[int]] = {}
    start = ("start", b"")
    index[start] = len(names)
    names.append(start)
    queue = [start]
    while queue:
        state = queue.pop()
        out = [DEAD] * 257
        for byte in range(256):
            nxt = step(*state, byte)
            if nxt is None:
                continue
            if nxt not in index:  # ("final", b"") is pre-seeded as FINAL, so it is never explored
                index[nxt] = len(names)
                names.append(nxt)
                queue.append(nxt)
            out[byte] = index[nxt]
        rows[index[state]] = out
    trans = np.full((len(names), 257), DEAD, dtype=np.int32)  # FINAL, DONE: no bytes allowed
    for i, out in rows.items():
        trans[i] = out
    trans[:, 256] = np.arange(len(names))  # padding byte: stay
    return trans, names, index[start]


class TableGrammar:
    """Per-vocabulary tables of the table grammar; per-sequence state is one int.

    Args:
        token_bytes: the bytes of every ordinary token, indexed by id (specials: anything, ignored).
        special_ids: ids that are not text (never allowed, except the EOS ids after `</table>`).
        eos_ids: ids that end the sequence (`<|im_end|>`, `<|endoftext|>`).
        vocab_size: the model's logits width (>= len(token_bytes); extra ids are never allowed).
    """

    def __init__(
        self,
        token_bytes: Sequence[bytes],
        special_ids: Sequence[int],
        eos_ids: Sequence[int],
        vocab_size: int | None = None,
    ):
        vocab_size = vocab_size or len(token_bytes)
        if vocab_size < len(token_bytes):
            raise TabVLMError(
                f"vocab_size {vocab_size} is smaller than the tokenizer's {len(token_bytes)} tokens"
            )
        trans, self.state_names, self.start = build_dfa()
        n_states = trans.shape[0]
        specials = set(special_ids) | set(eos_ids)
        # (V, L) bytes of each token, padded with 256 (identity); specials and empty tokens are dead
        lengths = [0 if i in specials else len(b) for i, b in enumerate(token_bytes)]
        width = max(lengths + [1])
        tok = np.full((vocab_size, width), 256, dtype=np.int32)
        usable = np.zeros(vocab_size, dtype=bool)
        for i, b in enumerate(token_bytes):
            if lengths[i]:
                tok[i, : lengths[i]] = np.frombuffer(b, dtype=np.uint8)
                usable[i] = True
        # run every token from every state at once: (S, V), one byte column per step
        nxt = np.broadcast_to(np.arange(n_states, dtype=np.int32)[:, None], (n_states, vocab_size)).copy()
        for j in range(width):
            nxt = trans[nxt, tok[None, :, j]]
        nxt[:, ~usable] = DEAD
        for e in eos_ids:
            nxt[FINAL, e] = DONE
            nxt[DONE, e] = DONE  # with stopping disabled (benchmarks) EOS repeats
        self.next_state = nxt  # (S, V) int32

        # fewest tokens from each state to FINAL (Bellman-Ford over the token graph)
        dist = np.full(n_states, _UNREACHABLE, dtype=np.int64)
        dist[FINAL] = dist[DONE] = 0
        for _ in range(n_states):
            new = np.minimum(dist, 1 + dist[nxt].min(axis=1))
            new[DEAD] = _UNREACHABLE
            if np.array_equal(new, dist):
                break
            dist = new
        self.dist = dist  # (S,)
        cost = dist[nxt]  # (S, V): tokens still needed to close after taking t
        cost[nxt == DEAD] = _UNREACHABLE
        self.cost = torch.from_numpy(np.minimum(cost, _UNREACHABLE).astype(np.int32))
        self.allowed = self.cost < _UNREACHABLE  # (S, V) bool, the plain grammar masks
        self.max_dist = int(dist[dist < _UNREACHABLE].max())
        if dist[self.start] >= _UNREACHABLE:
            raise TabVLMError("the vocabulary cannot spell a table (missing '<', 't', ... bytes?)")

    @classmethod
    def from_tokenizer(cls, tokenizer: TableTokenizer, vocab_size: int | None = None) -> TableGrammar:
        """Build from a `TableTokenizer` (its `vocab_bytes()` and `special_ids`)."""
        eos = [tokenizer.eos_id, tokenizer.endoftext_id]
        return cls(tokenizer.vocab_bytes(), sorted(tokenizer.special_ids), eos, vocab_size)

    @property
    def n_states(self) -> int:
        return int(self.next_state.shape[0])

    def min_tokens_to_close(self, state: int) -> int:
        """Fewest tokens that bring `state` to a closed table (0 once `</table>` is out)."""
        return int(self.dist[state])

    def mask(self, states: torch.Tensor, remaining: int) -> torch.Tensor:
        """Allowed tokens (B, V) bool for states (B,) when `remaining` tokens may still be generated
        (this one included). With a tight budget only tokens that can still close the table in
        time are allowed; when even that is impossible, the ones that close it soonest."""
        if remaining > self.max_dist:  # the budget cannot bind: cached rows
            return self.allowed[states]
        cost = self.cost[states]  # (B, V)
        limit = torch.clamp(cost.min(dim=1, keepdim=True).values, min=remaining - 1)  # (B, 1)
        return cost <= limit

    def advance(self, states: np.ndarray, tokens: np.ndarray) -> np.ndarray:
        """New states (B,) after tokens (B,)."""
        return self.next_state[states, tokens]

    def accepts(self, token_ids: Sequence[int]) -> bool:
        """True when the ids spell a complete table (FINAL or DONE)."""
        return self.walk(token_ids) in (FINAL, DONE)

    def walk(self, token_ids: Sequence[int]) -> int:
        """The state after `token_ids` from the start (DEAD once any token is disallowed)."""
        s = self.start
        for t in token_ids:
            s = int(self.next_state[s, t])
        return s
