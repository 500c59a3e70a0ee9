#!/usr/bin/env bash
# The main job on the embedded default, as far as kiln goes today: build and
# start kiln-composer with no configuration (SQLite in ./kiln-data, API on
# 127.0.0.1:8700), submit the compute-node request from examples/, and show
# its job graph and live events. Image builds are not wired yet (no depsolve,
# manifest or worker stage runs), so the compose stays pending; the script
# then cancels it and shows the event stream reporting the cancel.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
cargo build --release --locked -p kiln-composer
composer="$CARGO_TARGET_DIR/release/kiln-composer"
api=http://127.0.0.1:8700/api/image-builder-composer/v2

"$composer" > kiln-data.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$api/distributions" >/dev/null && break; sleep 0.1; done

echo "== distributions"; curl -sf "$api/distributions" | python3 -c 'import json,sys; d=json.load(sys.stdin); print(", ".join("%s (%s)" % (k, ", ".join(v)) for k, v in d.items()))'
echo "== POST /compose examples/compute-node.json"
id=$(curl -sf -H 'content-type: application/json' --data @examples/compute-node.json "$api/compose" | python3 -c 'import json,sys; print(json.load(sys.stdin)["id"])')
echo "compose $id"
echo "== job graph"
curl -sf "$api/composes/$id/jobs" | python3 -c 'import json,sys
for j in json.load(sys.stdin)["jobs"]:
    print("  %-9s %-8s %s  after %s" % (j["type"], j["state"], j["id"], ", ".join(j["dependencies"]) or "-"))'
echo "== status"; curl -sf "$api/composes/$id"; echo
echo "== events (while canceling)"
curl -sN "$api/composes/$id/events" & ev=$!
sleep 0.5
curl -sf -X POST "$api/composes/$id/cancel" >/dev/null
wait $ev || true
