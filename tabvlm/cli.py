"""The `tabvlm` command: one verb a module under tabvlm/commands/.

Run as: tabvlm VERB --help   (verbs: info synth data tokenizer train eval predict serve export)
        tabvlm --version        (or -V)
Each verb module exposes `main(argv: list[str]) -> int`; importing lazily keeps `--help` fast.
"""

from __future__ import annotations

import importlib
import logging
import sys

from tabvlm.errors import TabVLMError

VERBS = {
    "info": ("tabvlm.commands.info", "parameter counts and image tokens of a config or model"),
    "synth": ("tabvlm.commands.synth", "generate synthetic table images + gt.jsonl"),
    "data": ("tabvlm.commands.data", "convert other dataset formats; check a jsonl"),
    "tokenizer": ("tabvlm.commands.tokenizer", "rebuild the table tokenizer"),
    "train": ("tabvlm.commands.train", "train a stage from a YAML recipe"),
    "eval": ("tabvlm.commands.eval", "score predictions: ED, TEDS, TEDS-struct per category"),
    "predict": ("tabvlm.commands.predict", "recognise table images into HTML/Markdown/CSV"),
    "serve": ("tabvlm.commands.serve", "HTTP API + web UI"),
    "export": ("tabvlm.commands.export", "export to a transformers folder"),
}


def version() -> str:
    """The installed distribution's version; the package's own `__version__` when it is not
    installed (run from a source tree)."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version("tabvlm")
    except PackageNotFoundError:
        from tabvlm import __version__

        return __version__


def usage() -> str:
    lines = ["usage: tabvlm VERB [options]", "       tabvlm --version", "", "verbs:"]
    lines += [f"  {v:<10} {h}" for v, (_, h) in VERBS.items()]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] in ("-V", "--version"):
        print(f"tabvlm {version()}")
        return 0
    verb, rest = argv[0], argv[1:]
    if verb not in VERBS:
        print(f"tabvlm: unknown verb {verb!r}\n\n{usage()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        module = importlib.import_module(VERBS[verb][0])
    except ModuleNotFoundError as e:
        print(f"tabvlm {verb}: not available ({e})", file=sys.stderr)
        return 2
    try:
        return int(module.main(rest) or 0)
    except TabVLMError as e:
        print(f"tabvlm {verb}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
