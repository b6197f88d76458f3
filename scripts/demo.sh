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

echo "== recognising examples/ with the default model (models/tabvlm-base)"
tabvlm predict --out out/examples.jsonl examples/*.png
python -c 'import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print("%s (%.2f s): %s" % (r["id"], r["seconds"], r["html"]))' out/examples.jsonl
tabvlm eval --data examples/gt.jsonl --pred tabvlm-base=out/examples.jsonl
echo "== predictions (id, image, html, seconds) in out/examples.jsonl"
