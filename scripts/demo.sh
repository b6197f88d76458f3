#!/usr/bin/env bash
# Run as: bash scripts/demo.sh   -- set-up (see setup.sh), then the main job: recognise the bundled
# example tables (examples/) with the shipped default model (models/tabvlm-layout/: PP-OCRv6 reads
# the words, the layout model lays them out), print each table's HTML and score them against
# examples/gt.jsonl. No training: the model ships in the repository (its card,
# models/tabvlm-layout/README.md, says how it was trained and how it scores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p out
export TABVLM_READ_CACHE="$PWD/out/read-cache"  # the reader's words, kept: the second pass reads nothing again

echo "== $(tabvlm --version): recognising examples/ with the default model (models/tabvlm-layout)"
# predict's own output: each table under a line naming its image, its tokens and its times (the
# model's time is its batch's; the line shows this table's equal share of it)
tabvlm predict examples
echo "== scoring them against examples/gt.jsonl"
tabvlm predict --out out/examples.jsonl --viz out/viz examples
tabvlm eval --data examples --pred tabvlm-layout=out/examples.jsonl
echo "== one line per table in out/examples.jsonl: id, image, html, tokens, truncated, and its times"
echo "   (image_seconds, reader_seconds, model_seconds, batch_seconds, batch_size); words and cells drawn in out/viz/"
