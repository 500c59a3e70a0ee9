#!/usr/bin/env python3
"""Keeps the build cache ($CARGO_TARGET_DIR) from growing with every clone.

The cache lives outside the clone so that fresh clones reuse the compiled
dependencies. cargo gives kiln's crates new hashes whenever what they are
built with changes (features, dependencies, lints, the compiler: any commit
of another clone may differ) and never removes the old artifacts
(debug/deps, debug/.fingerprint); debug/incremental holds another copy of
each crate's state. This removes, for kiln's own crates only, the artifacts
the current build does not use, and debug/incremental. Registry crates are
left alone.

"The current build" is what `cargo test --workspace --no-run` (or the cargo
test arguments given) reports, fresh units included: every artifact it names,
and for binaries, which cargo reports by their uplifted copy, the file in
debug/deps that copy is a hard link of. When that cargo command fails nothing
is removed.

Usage (from tools/test.sh, after the tests): python3 tools/prune-cache.py [CARGO TEST ARGS]
"""

import json
import os
import re
import shutil
import subprocess
import sys

# `<name>-<hash>[.ext]`; libraries' files add a `lib` prefix.
HASHED = re.compile(r"^(?P<name>.+)-(?P<hash>[0-9a-f]{16})(?:\..*)?$")


def ours(name, names):
    return name in names or (name.startswith("lib") and name[3:] in names)


def main(args):
    target = os.environ.get("CARGO_TARGET_DIR")
    if not target:
        sys.exit("prune-cache: CARGO_TARGET_DIR is not set")
    debug = os.path.join(target, "debug")
    deps = os.path.join(debug, "deps")
    fingerprints = os.path.join(debug, ".fingerprint")
    if not os.path.isdir(deps):
        return

    # The incremental state goes first, whatever cargo says below: it is
    # never needed by a fresh build, and on a full disk the build that
    # tells what is current needs its room.
    freed = 0
    incremental = os.path.join(debug, "incremental")
    if os.path.isdir(incremental):
        freed += size(incremental)
        shutil.rmtree(incremental, ignore_errors=True)

    meta = subprocess.run(
        ["cargo", "metadata", "--no-deps", "--format-version", "1", "--locked"],
        capture_output=True, text=True)
    build = subprocess.run(
        ["cargo", "test", "--locked", "--no-run", "--message-format=json"] + (args or ["--workspace"]),
        capture_output=True, text=True)
    if meta.returncode != 0 or build.returncode != 0:
        print("prune-cache: cargo failed; only debug/incremental removed", file=sys.stderr)
        return

    # kiln's own crates: package names (.fingerprint) and target names as
    # files in deps are named (dashes become underscores).
    packages, crates = set(), set()
    for p in json.loads(meta.stdout)["packages"]:
        packages.add(p["name"])
        for t in p["targets"]:
            crates.add(t["name"].replace("-", "_"))

    by_inode = {}
    for entry in os.scandir(deps):
        if entry.is_file(follow_symlinks=False):
            by_inode.setdefault(entry.inode(), []).append(entry.name)
    current = set()
    for line in build.stdout.splitlines():
        try:
            msg = json.loads(line)
        except ValueError:
            continue
        if msg.get("reason") != "compiler-artifact":
            continue
        for f in msg.get("filenames", []) + [msg.get("executable") or ""]:
            if not f:
                continue
            names = [os.path.basename(f)]
            if not HASHED.match(names[0]) and os.path.exists(f):
                names = by_inode.get(os.stat(f).st_ino, [])
            for n in names:
                m = HASHED.match(n)
                if m:
                    current.add(m["hash"])
    if not current:
        print("prune-cache: cargo reported no artifacts; only debug/incremental removed", file=sys.stderr)
        return

    removed = 0
    for directory, names in ((deps, crates), (fingerprints, packages)):
        if not os.path.isdir(directory):
            continue
        for entry in os.scandir(directory):
            m = HASHED.match(entry.name)
            if not m or not ours(m["name"], names) or m["hash"] in current:
                continue
            freed += size(entry.path)
            removed += 1
            remove(entry.path)
    print(f"prune-cache: removed {removed} stale artifacts of kiln's crates and "
          f"debug/incremental, {freed / 2**30:.1f} GiB", file=sys.stderr)


def size(path):
    if os.path.isdir(path) and not os.path.islink(path):
        total = 0
        for root, _, files in os.walk(path):
            for f in files:
                try:
                    total += os.lstat(os.path.join(root, f)).st_size
                except OSError:
                    pass
        return total
    try:
        return os.lstat(path).st_size
    except OSError:
        return 0


def remove(path):
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path, ignore_errors=True)
    else:
        try:
            os.unlink(path)
        except OSError:
            pass


if __name__ == "__main__":
    main(sys.argv[1:])
