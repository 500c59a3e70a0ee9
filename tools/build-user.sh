#!/usr/bin/env bash
# Makes the unprivileged user kiln builds run as (idempotent; run as root):
# a system user `kiln` (or $KILN_BUILD_USER) with a home in /var/lib/kiln and
# a range of 65536 subordinate uids and gids, which kiln-osbuild maps into
# the user namespaces its stages run in. Needs shadow's newuidmap and
# newgidmap (Debian: the uidmap package).
set -euo pipefail
user="${KILN_BUILD_USER:-kiln}"
[ "$(id -u)" -eq 0 ] || { echo "build-user.sh: run as root" >&2; exit 1; }
if ! command -v newuidmap >/dev/null || ! command -v newgidmap >/dev/null; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends uidmap
fi
if ! id -u "$user" >/dev/null 2>&1; then
    useradd --system --create-home --home-dir "/var/lib/$user" --shell /usr/sbin/nologin "$user"
    echo "build-user.sh: made the system user $user (home /var/lib/$user)"
fi
# The first free range of 65536 ids at or above 100000, in both files.
has_range() { awk -F: -v u="$user" -v id="$(id -u "$user")" \
    '($1 == u || $1 == id) && $3 >= 65536 { found = 1 } END { exit !found }' "$1"; }
free_start() {
    cat /etc/subuid /etc/subgid 2>/dev/null | awk -F: 'BEGIN { top = 100000 }
        NF >= 3 && $2 + $3 > top { top = $2 + $3 } END { print top }'
}
if ! has_range /etc/subuid || ! has_range /etc/subgid; then
    start=$(free_start)
    end=$((start + 65535))
    usermod --add-subuids "$start-$end" --add-subgids "$start-$end" "$user"
    echo "build-user.sh: gave $user the subordinate ids $start-$end (/etc/subuid, /etc/subgid)"
fi
