#!/usr/bin/env bash
# Runs every test of kiln on a fresh Debian 12 machine: installs what the
# suite needs (idempotently), then runs the whole workspace's tests, which
# start their own servers (PostgreSQL clusters, HTTP servers) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: PostgreSQL's server binaries for the
# throwaway clusters; apt-ftparchive, gpg/gpgv, xz, rpmbuild and createrepo_c
# to build and sign the test repositories of kiln-depsolve; python3-solv for
# its benchmark's libsolv column; openssl for tools/gen-certs.sh, whose
# certificates the worker API tests use.
packages=(postgresql apt-utils gnupg gpgv xz-utils rpm createrepo-c python3-solv openssl)

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
    echo "installing: ${missing[*]}"
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
# kiln-depsolve compares itself with apt on the machine's real bookworm indexes.
if ! ls /var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_Packages* >/dev/null 2>&1; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }

# The build cache lives outside the clone so that fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?

# One closing line for the whole workspace.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "\nkiln: %d passed, %d failed, %d skipped\n", p, f, s }' "$log"
exit "$status"
