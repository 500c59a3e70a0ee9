#!/usr/bin/env bash
# kiln's Debian packages and an apt repository of them:
#   kiln-composer (the composer, its unit), kiln-worker (the worker, its
#   unit, the build user's script), kiln (the command line),
# built with cargo-deb (installed when missing) from the [package.metadata.deb]
# of composer/, worker/ and cli/, and indexed with apt-ftparchive into
#   OUT/pool/main/*.deb
#   OUT/dists/kiln/main/binary-amd64/Packages{,.gz}
#   OUT/dists/kiln/Release
# A kiln compose names it as {"baseurl": "file://OUT" (or where it is
# served), "suite": "kiln", "components": ["main"]}. Release is unsigned:
# sign it with the site's key (`gpg --clearsign -o InRelease Release`) and
# give composes that key (deploy/README.md).
#
# Usage: tools/build-debs.sh [--out DIR] [--profile release|dev] [--no-build] [--fast]
#   --out DIR      the repository (default target-dir/kiln-apt); its pool is replaced
#   --profile P    the cargo profile whose binaries are packaged (default release)
#   --no-build     package binaries already built in that profile
#   --fast         faster, larger compression of the packages
#   --tools-only   only install what it needs (cargo-deb, apt-ftparchive)
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
out="$CARGO_TARGET_DIR/kiln-apt"
profile=release
deb_args=()
tools_only=
while (($#)); do
    case "$1" in
        --out) out="$2"; shift 2 ;;
        --profile) profile="$2"; shift 2 ;;
        --no-build) deb_args+=(--no-build); shift ;;
        --fast) deb_args+=(--fast); shift ;;
        --tools-only) tools_only=1; shift ;;
        *) echo "build-debs.sh: unknown argument $1" >&2; exit 2 ;;
    esac
done
if ! command -v apt-ftparchive >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends apt-utils
fi
# 3.8.0 builds with Rust 1.95 (it needs 1.85).
if ! cargo deb --version >/dev/null 2>&1; then
    CARGO_TARGET_DIR="$CARGO_TARGET_DIR/cargo-deb-build" cargo install cargo-deb --version 3.8.0 --locked
    rm -rf "$CARGO_TARGET_DIR/cargo-deb-build"
fi
[ -z "$tools_only" ] || exit 0
pool="$out/pool/main"
rm -rf "$pool" "$out/dists"
mkdir -p "$pool" "$out/dists/kiln/main/binary-amd64"
for crate in kiln-composer kiln-worker kiln-cli; do
    # Stripped: the debug information stays in the build cache.
    cargo deb --locked --quiet -p "$crate" --profile "$profile" --strip "${deb_args[@]}" --output "$pool"
done
cd "$out"
apt-ftparchive packages pool > dists/kiln/main/binary-amd64/Packages
gzip -9n < dists/kiln/main/binary-amd64/Packages > dists/kiln/main/binary-amd64/Packages.gz
apt-ftparchive \
    -o APT::FTPArchive::Release::Origin=kiln \
    -o APT::FTPArchive::Release::Label=kiln \
    -o APT::FTPArchive::Release::Suite=kiln \
    -o APT::FTPArchive::Release::Codename=kiln \
    -o APT::FTPArchive::Release::Architectures=amd64 \
    -o APT::FTPArchive::Release::Components=main \
    release dists/kiln > dists/kiln/Release.new
mv dists/kiln/Release.new dists/kiln/Release
echo "build-debs.sh: $(ls pool/main | tr '\n' ' ')in $out (suite kiln, component main)"
