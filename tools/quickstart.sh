#!/usr/bin/env bash
# The main job on the embedded default: build a `pxe` image for the compute
# node in examples/ end to end, on this machine, and print where its kernel,
# initrd and squashfs are and the kernel command line that boots them.
#
#   1. builds kiln-composer, kiln-worker and kiln (release);
#   2. makes the cluster's certificates (tools/gen-certs.sh);
#   3. makes a local Debian mirror with apt: kiln depsolves the image's
#      packages, `apt-get download` fetches exactly those, apt-ftparchive
#      indexes them;
#   4. starts kiln-composer (SQLite in kiln-data/) and one kiln-worker
#      (mutual TLS, builtin executor, local upload target);
#   5. submits the compose and follows it with `kiln compose start --wait`.
#
# Everything lives in ./kiln-data (KILN_DATA to move it). Run it as root: it
# installs packages and, once, makes the unprivileged build user `kiln` with
# its subordinate ids (tools/build-user.sh). The worker then runs as that
# user, never as root: every stage runs in a user namespace mapped from its
# subordinate ids. Run it again and the package cache and the executor's
# store make the second build fast.
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
data=${KILN_DATA:-$repo/kiln-data}
[ "$(id -u)" -eq 0 ] || { echo "quickstart: run as root (it installs packages and makes the build user)" >&2; exit 1; }

packages=(bubblewrap squashfs-tools apt-utils openssl curl python3 zstd cpio uidmap)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "== installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

echo "== building kiln (release)"
cargo build --release --locked -q -p kiln-composer -p kiln-worker -p kiln-cli
user=${KILN_BUILD_USER:-kiln}
echo "== the build user $user and its subordinate ids"
bash tools/build-user.sh
mkdir -p "$data"
# The binaries where the build user can run them (the build cache is root's).
bin=$data/bin
mkdir -p "$bin"
for b in kiln-composer kiln-worker kiln; do
    install -m 0755 "$CARGO_TARGET_DIR/release/$b" "$bin/$b"
done

echo "== certificates"
bash tools/gen-certs.sh --out "$data/certs" --worker worker.local >/dev/null

echo "== a local Debian mirror, made with apt"
# apt must know the versions kiln picks from the live repositories.
apt-get update -qq
request=$repo/examples/compute-node.json
# The image type's packages (distributions/debian-12.toml) and the request's.
mapfile -t wanted < <(python3 - "$request" <<'EOF'
import json, sys, tomllib
distro = tomllib.load(open("distributions/debian-12.toml", "rb"))
pkgs = [p.replace("${package_arch}", "amd64") for p in distro["image_types"]["pxe"]["packages"]]
pkgs += json.load(open(sys.argv[1])).get("customizations", {}).get("packages", [])
print("\n".join(pkgs))
EOF
)
sources=()
while IFS= read -r line; do sources+=(--source "$line"); done < <(python3 - <<'EOF'
import tomllib
d = tomllib.load(open("distributions/debian-12.toml", "rb"))
for r in d["repositories"]:
    print("deb %s %s %s" % (r["baseurl"], r["suite"], " ".join(r["components"])))
EOF
)
"$bin/kiln" depsolve --arch amd64 --essential --output json "${sources[@]}" "${wanted[@]}" > "$data/package-set.json"
debs=${KILN_DEB_CACHE:-$HOME/.cache/kiln/debs}
mkdir -p "$debs"
mapfile -t fetch < <(python3 - "$data/package-set.json" "$debs" <<'EOF'
import json, os, sys
for p in json.load(open(sys.argv[1]))["packages"]:
    name = "%s_%s_%s.deb" % (p["name"], p["version"].replace(":", "%3a"), p["arch"])
    if not os.path.exists(os.path.join(sys.argv[2], name)):
        print("%s:%s=%s" % (p["name"], p["arch"], p["version"]))
EOF
)
if ((${#fetch[@]})); then
    echo "   apt-get download: ${#fetch[@]} packages"
    (cd "$debs" && apt-get download -q -o APT::Sandbox::User=root "${fetch[@]}" >/dev/null)
fi
mirror=$data/mirror
rm -rf "$mirror" && mkdir -p "$mirror/pool/main" "$mirror/dists/local/main/binary-amd64"
python3 - "$data/package-set.json" "$debs" "$mirror/pool/main" <<'EOF'
import json, os, sys
for p in json.load(open(sys.argv[1]))["packages"]:
    name = "%s_%s_%s.deb" % (p["name"], p["version"].replace(":", "%3a"), p["arch"])
    os.link(os.path.join(sys.argv[2], name), os.path.join(sys.argv[3], name))
EOF
(cd "$mirror" && apt-ftparchive packages pool > dists/local/main/binary-amd64/Packages \
    && apt-ftparchive -o APT::FTPArchive::Release::Suite=local -o APT::FTPArchive::Release::Components=main \
       -o APT::FTPArchive::Release::Architectures=amd64 release dists/local > dists/local/Release)
echo "   $(ls "$mirror/pool/main" | wc -l) packages in $mirror"
chmod -R a+rX "$mirror"

echo "== starting kiln-composer and kiln-worker"
mkdir -p "$data/images"
cat > "$data/composer.toml" <<EOF
data_dir = "$data/composer"
[repositories]
# The request names the local mirror; a repository outside these prefixes
# (and the distributions' own) is refused with 403.
allow = ["file://$mirror"]
[worker_api]
ca = "$data/certs/ca.pem"
cert = "$data/certs/composer.pem"
key = "$data/certs/composer.key"
allowed_domains = ["worker.local"]
EOF
cat > "$data/worker.toml" <<EOF
composer = "https://localhost:8701"
ca = "$data/certs/ca.pem"
cert = "$data/certs/worker-worker.local.pem"
key = "$data/certs/worker-worker.local.key"
store = "$data/worker/store"
work_dir = "$data/worker/jobs"
[targets.local]
type = "local"
path = "$data/images"
EOF
"$bin/kiln-composer" --config "$data/composer.toml" > "$data/composer.log" 2>&1 &
composer_pid=$!
# The worker's directories, certificate and key are the build user's; a
# store left by a root-run kiln of an earlier version goes.
if [ -d "$data/worker" ] && [ "$(stat -c %U "$data/worker")" != "$user" ]; then
    rm -rf "$data/worker"
fi
mkdir -p "$data/worker"
chown "$user:" "$data/worker" "$data/images" "$data/certs/worker-worker.local.pem" \
    "$data/certs/worker-worker.local.key"
setpriv --reuid="$user" --regid="$user" --clear-groups env HOME="/var/lib/$user" \
    "$bin/kiln-worker" --config "$data/worker.toml" > "$data/worker.log" 2>&1 &
worker_pid=$!
trap 'kill $worker_pid $composer_pid 2>/dev/null; wait $worker_pid $composer_pid 2>/dev/null || true' EXIT
api=http://127.0.0.1:8700/api/image-builder-composer/v2
for _ in $(seq 100); do curl -sf "$api/distributions" >/dev/null && break; sleep 0.1; done

echo "== compose: examples/compute-node.json from the local mirror"
python3 - "$request" "$mirror" > "$data/request.json" <<'EOF'
import json, sys
r = json.load(open(sys.argv[1]))
r["image_request"]["repositories"] = [{"baseurl": "file://" + sys.argv[2], "suite": "local", "components": ["main"], "check_repo_gpg": False}]
print(json.dumps(r))
EOF
id=$("$bin/kiln" compose start --request "$data/request.json")
"$bin/kiln" compose wait "$id"
cmdline=$(curl -sf "$api/composes/$id/logs" | python3 -c '
import json, sys
for b in json.load(sys.stdin)["image_builds"]:
    for j in b["jobs"]:
        if j["type"] == "manifest": print((j.get("result") or {}).get("kernel_cmdline", ""))')
img=$data/images/$id-0
cat <<EOF

The image: kernel $img-vmlinuz
           initrd $img-initrd.img
           root   $img-rootfs.squashfs
Kernel command line: root=live:<URL of the squashfs> $cmdline
(a 'boot' upload target puts these in the cluster's boot image store and BSS; see README.)
Boot it here, without a network (software emulation: allow a few minutes):
  qemu-system-x86_64 -machine q35 -accel tcg -m 2048 -smp 2 -nographic -no-reboot -nic none \\
    -kernel $img-vmlinuz -initrd $img-initrd.img \\
    -drive file=$img-rootfs.squashfs,format=raw,if=virtio,readonly=on \\
    -append 'root=live:/dev/vda rd.live.overlay.overlayfs=1 console=ttyS0'
Logs: $data/composer.log, $data/worker.log
EOF
