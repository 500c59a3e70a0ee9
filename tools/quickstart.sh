#!/usr/bin/env bash
# The main job on the embedded default, as far as kiln goes today: build and
# start kiln-composer with no configuration (SQLite in ./kiln-data, API on
# 127.0.0.1:8700), submit the compute-node request from examples/, and follow
# it: the composer depsolves it against the distribution's repositories and
# writes its osbuild manifest; then the build waits for a worker (workers and
# the executor are not built yet), so the script cancels it while following
# the compose's event stream.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
command -v curl >/dev/null || { apt-get update -qq && apt-get install -y -qq curl; }
cargo build --release --locked -p kiln-composer
composer="$CARGO_TARGET_DIR/release/kiln-composer"
api=http://127.0.0.1:8700/api/image-builder-composer/v2
py() { python3 -c "import json,sys; d=json.load(sys.stdin); $1"; }

"$composer" > kiln-data.log 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null || true' EXIT
for _ in $(seq 100); do curl -sf "$api/distributions" >/dev/null && break; sleep 0.1; done

echo "== distributions"
curl -sf "$api/distributions" | py 'print(", ".join("%s (%s)" % (k, ", ".join(v)) for k, v in d.items()))'
echo "== POST /compose examples/compute-node.json"
id=$(curl -sf -H 'content-type: application/json' --data @examples/compute-node.json "$api/compose" | py 'print(d["id"])')
echo "compose $id"

echo "== job graph, until the build waits for a worker"
graph() { curl -sf "$api/composes/$id/jobs" | py 'print(" ".join("%s:%s" % (j["type"], j["state"]) for j in d["jobs"]))'; }
for _ in $(seq 300); do
    g=$(graph)
    case "$g" in
        *failed*|*build:queued*) break ;;
    esac
    sleep 0.5
done
echo "  $g"
echo "== status"
curl -sf "$api/composes/$id"; echo
case "$g" in *failed*) echo "the compose failed; its reason is in the status above"; exit 1 ;; esac

echo "== metadata: the exact package set"
curl -sf "$api/composes/$id/metadata" | py 'p = d["packages"]; print("%d packages, e.g. %s" % (len(p), ", ".join("%s %s-%s" % (x["name"], x["version"], x["release"]) for x in p if x["name"].startswith("linux-image-"))))'
echo "== manifest: pipelines and stages"
curl -sf "$api/composes/$id/manifests" | py '
for p in d["manifests"][0]["pipelines"]:
    print("  %-8s %s" % (p["name"], " ".join(s["type"] for s in p["stages"])))'
echo "== kernel command line (the boot target adds root=live:<URL of rootfs.squashfs>)"
curl -sf "$api/composes/$id/logs" | py '
for b in d["image_builds"]:
    for j in b["jobs"]:
        if j["type"] == "manifest": print("  " + j["result"].get("kernel_cmdline", "-"))'

echo "== events (while canceling the build that waits for a worker)"
curl -sN "$api/composes/$id/events" & ev=$!
sleep 0.5
curl -sf -X POST "$api/composes/$id/cancel" >/dev/null
wait $ev || true
