#!/usr/bin/env bash
# Run as: bash scripts/demo.sh   -- set-up (see setup.sh), then the main job: recognise examples/.
#
# With a shipped default model (models/tabvlm-base/) it recognises examples/ with it. Until one
# ships, it trains the quickstart model from scratch on CPU (configs/quickstart.yaml, ~15 min on
# 2 cores; skipped when runs/quickstart/final exists) and recognises examples/simple/ (tables of
# the kind it learned) and examples/ (harder tables it was not trained for), scoring both.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
mkdir -p out

if [ -f models/tabvlm-base/config.json ]; then
  model=models/tabvlm-base
  sets="examples"
else
  model=runs/quickstart/final
  if [ ! -f "$model/config.json" ]; then
    echo "== no default model ships yet: training the quickstart model (configs/quickstart.yaml)"
    tabvlm train configs/quickstart.yaml
  fi
  sets="examples/simple examples"
fi

for set in $sets; do
  name=$(basename "$set")
  echo "== recognising $set/ with $model"
  tabvlm predict --model "$model" --out "out/$name.jsonl" "$set"
  python -c 'import json, sys
for line in open(sys.argv[1]):
    r = json.loads(line)
    print(r["id"] + ": " + r["html"])' "out/$name.jsonl"
  tabvlm eval --data "$set/gt.jsonl" --pred "$name=out/$name.jsonl"
done
echo "== predictions (id, image, html, seconds) in out/<set>.jsonl"
