#!/usr/bin/env bash
# Run as: bash scripts/demo.sh   -- set-up (see setup.sh), then the main job: recognise the bundled
# example tables (examples/) with the shipped default model (models/tabvlm-base/), print each
# table's HTML and score them against examples/gt.jsonl. No training: the model ships in the
# repository (its card, models/tabvlm-base/README.md, says how it was trained and how it scores).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p out

echo "== $(tabvlm --version): recognising examples/ with the default model (models/tabvlm-base)"
# predict's own output: each table under a line naming its image, its tokens and its times (the
# model's time is its batch's; the line shows this table's equal share of it)
tabvlm predict examples
echo "== scoring them against examples/gt.jsonl"
tabvlm predict --out out/examples.jsonl examples
tabvlm eval --data examples --pred tabvlm-base=out/examples.jsonl
echo "== one line per table in out/examples.jsonl: id, image, html, tokens, truncated, and its times"
echo "   (image_seconds, reader_seconds, model_seconds, batch_seconds, batch_size)"
