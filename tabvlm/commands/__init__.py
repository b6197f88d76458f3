"""One module a CLI verb (`tabvlm.cli` dispatches); shared argument helpers here, torch-free."""

from __future__ import annotations

import argparse


def add_dtype_option(ap: argparse.ArgumentParser) -> None:
    """`--dtype`, the choices of `TableRecognizer.from_pretrained` (named here, not imported:
    the CLI imports torch only once a verb runs)."""
    ap.add_argument(
        "--dtype",
        choices=["float32", "bfloat16", "int8"],
        default="float32",
        help="bfloat16 halves the weights' memory; int8: weight-only int8 LM on CPU, the fastest "
        "single stream, outputs close to float32's (docs/BENCHMARKS.md)",
    )
