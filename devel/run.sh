#!/usr/bin/env bash
# The multi-process kiln stack on one machine, without Docker:
#   PostgreSQL (a throwaway cluster, run as the postgres user), kiln-composer
#   on it with the worker API (mutual TLS), two kiln-workers with their own
#   certificates, an S3 server (s3s-fs) holding a `images` and a `boot`
#   bucket, and the OpenCHAMI BSS and SMD test doubles (3 compute nodes in the
#   SMD group `compute`).
# Everything lives in devel/.state (removed at the start); Ctrl-C stops it all.
#
#   bash devel/run.sh            then, in another shell, e.g.:
#   kiln compose start --request examples/compute-node.json --wait
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
state=$repo/devel/.state
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
tools="${KILN_TOOLS_DIR:-$HOME/.cache/kiln-tools}"
[ "$(id -u)" -eq 0 ] || { echo "devel/run.sh: run as root (workers sandbox stages with bubblewrap)" >&2; exit 1; }
[ -x "$tools/bin/s3s-fs" ] || { echo "devel/run.sh: s3s-fs is missing; bash tools/test.sh installs it into $tools" >&2; exit 1; }
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)

cargo build --release --locked -q -p kiln-composer -p kiln-worker -p kiln-cli
cargo build --release --locked -q -p kiln-testsupport --features openchami --bin openchami-doubles
bin=$CARGO_TARGET_DIR/release

rm -rf "$state" && mkdir -p "$state"
pids=()
cleanup() {
    kill "${pids[@]}" 2>/dev/null || true
    wait 2>/dev/null || true
    runuser -u postgres -- "$pgbin/pg_ctl" -D "$state/pg" -m fast stop >/dev/null 2>&1 || true
}
trap cleanup EXIT INT TERM

echo "== PostgreSQL"
mkdir -p "$state/pg" "$state/pgsock" "$state/pglog" && chown postgres "$state/pg" "$state/pgsock" "$state/pglog"
runuser -u postgres -- "$pgbin/initdb" -D "$state/pg" -A trust -U postgres >/dev/null
runuser -u postgres -- "$pgbin/pg_ctl" -D "$state/pg" -l "$state/pglog/pg.log" -w \
    -o "-k $state/pgsock -p 55432 -c listen_addresses=127.0.0.1" start >/dev/null
runuser -u postgres -- "$pgbin/createdb" -h 127.0.0.1 -p 55432 kiln
db=postgres://postgres@127.0.0.1:55432/kiln

echo "== certificates"
bash tools/gen-certs.sh --out "$state/certs" --worker worker1.devel --worker worker2.devel --client admin >/dev/null

echo "== S3 (s3s-fs) with buckets images and boot"
mkdir -p "$state/s3/images" "$state/s3/boot"
s3_secret=devel-secret-$RANDOM$RANDOM
"$tools/bin/s3s-fs" --host 127.0.0.1 --port 9000 --access-key DEVELACCESSKEY --secret-key "$s3_secret" "$state/s3" > "$state/s3.log" 2>&1 &
pids+=($!)

echo "== BSS and SMD test doubles"
"$bin/openchami-doubles" --nodes 3 --token devel-token > "$state/openchami.env" 2> "$state/openchami.log" &
pids+=($!)
for _ in $(seq 100); do grep -q SMD_URL "$state/openchami.env" 2>/dev/null && break; sleep 0.1; done
# shellcheck disable=SC1091
. "$state/openchami.env"
# The workers' boot service: BSS, or OpenCHAMI boot-service with
# KILN_DEVEL_BOOT_SERVICE=boot-service.
if [ "${KILN_DEVEL_BOOT_SERVICE:-bss}" = boot-service ]; then
    boot_service_line="boot_service = { url = \"$BOOT_SERVICE_URL\" }"
else
    boot_service_line="bss = { url = \"$BSS_URL\", token = \"devel-token\" }"
fi

echo "== kiln-composer (PostgreSQL)"
cat > "$state/composer.toml" <<EOF
data_dir = "$state/composer"
database_url = "$db"
[worker_api]
ca = "$state/certs/ca.pem"
cert = "$state/certs/composer.pem"
key = "$state/certs/composer.key"
allowed_domains = ["*.devel"]
[[auth.boot_grants]]
tenant = "default"
image_names = ["*"]
groups = ["compute"]
xnames = ["x1000c0s*b0n0"]
EOF
"$bin/kiln-composer" --config "$state/composer.toml" > "$state/composer.log" 2>&1 &
pids+=($!)

for w in worker1 worker2; do
    cat > "$state/$w.toml" <<EOF
composer = "https://localhost:8701"
ca = "$state/certs/ca.pem"
cert = "$state/certs/worker-$w.devel.pem"
key = "$state/certs/worker-$w.devel.key"
store = "$state/$w/store"
work_dir = "$state/$w/jobs"
job_types = ["build", "boot"]
[targets.local]
type = "local"
path = "$state/images"
[targets."aws.s3"]
type = "s3"
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
bucket = "images"
access_key_id = "DEVELACCESSKEY"
secret_access_key = "$s3_secret"
path_style = true
[boot]
prefix = "kiln"
base_url = "http://127.0.0.1:9000/boot"
$boot_service_line
smd = { url = "$SMD_URL", token = "devel-token" }
[boot.store]
endpoint = "http://127.0.0.1:9000"
region = "us-east-1"
bucket = "boot"
access_key_id = "DEVELACCESSKEY"
secret_access_key = "$s3_secret"
path_style = true
EOF
    mkdir -p "$state/images"
    "$bin/kiln-worker" --config "$state/$w.toml" > "$state/$w.log" 2>&1 &
    pids+=($!)
done

for _ in $(seq 100); do curl -sf http://127.0.0.1:8700/api/image-builder-composer/v2/distributions >/dev/null && break; sleep 0.1; done
cat <<EOF

kiln devel stack is up (logs in $state):
  compose API   http://127.0.0.1:8700/api/image-builder-composer/v2   (kiln compose ..., curl)
  worker API    https://localhost:8701 (mutual TLS; workers worker1.devel, worker2.devel)
  PostgreSQL    $db
  S3            http://127.0.0.1:9000  buckets images, boot   (access key DEVELACCESSKEY)
  BSS           $BSS_URL   SMD $SMD_URL   (token devel-token; group "compute": x1000c0s{0,1,2}b0n0)
  boot-service  $BOOT_SERVICE_URL   (the workers use ${KILN_DEVEL_BOOT_SERVICE:-bss}; /bootscript?host=XNAME)
Upload targets: local, aws.s3, boot (e.g. {"type": "boot", "upload_options": {"image_name": "compute", "nodes": {"group": "compute"}}}).
Ctrl-C stops everything.
EOF
wait
