#!/usr/bin/env bash
# Makes the TLS material of a kiln cluster with openssl alone:
#   ca.pem / ca.key                     the cluster's CA (signs everything below)
#   composer.pem / composer.key         the composer's worker-API server certificate
#   worker-NAME.pem / worker-NAME.key   one client certificate per worker host
#   client-NAME.pem / client-NAME.key   client certificates for the CLI
#   crl.pem                             with --revoke: the CA's revocation list
# Keys are EC P-256, mode 0600. Running it again keeps what exists (so the CA
# and every issued certificate stay valid) and only adds what is missing.
#
#   tools/gen-certs.sh [--out DIR] [--server-san NAME]... [--worker NAME]...
#                      [--client NAME]... [--days N] [--revoke NAME]...
#
# Defaults: --out ./certs, --server-san localhost --server-san composer (the
# server certificate also carries IP 127.0.0.1), no workers, no clients.
# --revoke NAME (a worker's or client's name, repeatable) writes crl.pem
# listing exactly the certificates named (give all of them each time), for
# the composer's worker_api.crl.
set -euo pipefail

out=./certs
days=825
sans=()
workers=()
clients=()
revoked=()

usage() { sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'; exit "${1:-0}"; }

while [ $# -gt 0 ]; do
    case "$1" in
        --out) out=${2:?--out needs a directory}; shift 2 ;;
        --server-san) sans+=("${2:?--server-san needs a name}"); shift 2 ;;
        --worker) workers+=("${2:?--worker needs a host name}"); shift 2 ;;
        --client) clients+=("${2:?--client needs a name}"); shift 2 ;;
        --days) days=${2:?--days needs a number}; shift 2 ;;
        --revoke) revoked+=("${2:?--revoke needs a name}"); shift 2 ;;
        -h|--help) usage 0 ;;
        *) echo "gen-certs.sh: unknown argument $1" >&2; usage 2 >&2 ;;
    esac
done
[ ${#sans[@]} -gt 0 ] || sans=(localhost composer)

# A name becomes a file name and a DNS SAN: keep it to DNS characters.
for n in "${sans[@]}" "${workers[@]}" "${clients[@]}" "${revoked[@]}"; do
    if ! [[ $n =~ ^[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?$ ]]; then
        echo "gen-certs.sh: $n is not a DNS name" >&2
        exit 2
    fi
done

command -v openssl >/dev/null || { echo "gen-certs.sh: openssl is not installed" >&2; exit 1; }
mkdir -p "$out"
umask 077

new_key() { # path
    openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2>/dev/null
    chmod 0600 "$1"
}

if [ ! -s "$out/ca.pem" ] || [ ! -s "$out/ca.key" ]; then
    new_key "$out/ca.key"
    openssl req -x509 -new -key "$out/ca.key" -sha256 -days "$days" \
        -subj "/CN=kiln cluster CA" \
        -addext "basicConstraints=critical,CA:TRUE" \
        -addext "keyUsage=critical,keyCertSign,cRLSign" \
        -addext "subjectKeyIdentifier=hash" \
        -out "$out/ca.pem"
    chmod 0644 "$out/ca.pem"
    echo "made $out/ca.pem"
fi

# issue BASENAME CN EKU SAN-LIST
issue() {
    local base=$1 cn=$2 eku=$3 san=$4 ext
    if [ -s "$out/$base.pem" ] && [ -s "$out/$base.key" ]; then
        return
    fi
    new_key "$out/$base.key"
    ext=$(mktemp)
    trap 'rm -f "$ext"' RETURN
    cat >"$ext" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature
extendedKeyUsage=$eku
subjectAltName=$san
subjectKeyIdentifier=hash
authorityKeyIdentifier=keyid
EOF
    openssl req -new -key "$out/$base.key" -subj "/CN=$cn" -out "$out/$base.csr"
    openssl x509 -req -in "$out/$base.csr" -CA "$out/ca.pem" -CAkey "$out/ca.key" \
        -CAcreateserial -CAserial "$out/ca.srl" -sha256 -days "$days" \
        -extfile "$ext" -out "$out/$base.pem" 2>/dev/null
    rm -f "$out/$base.csr"
    chmod 0644 "$out/$base.pem"
    echo "made $out/$base.pem ($cn)"
}

server_san="IP:127.0.0.1"
for n in "${sans[@]}"; do server_san+=",DNS:$n"; done
issue composer "${sans[0]}" serverAuth "$server_san"

for w in "${workers[@]}"; do
    issue "worker-$w" "$w" clientAuth "DNS:$w"
done
for c in "${clients[@]}"; do
    issue "client-$c" "$c" clientAuth "DNS:$c"
done

# The revocation list: openssl ca reads revoked certificates from an index
# file, made here in a scratch directory from the certificates themselves.
if [ ${#revoked[@]} -gt 0 ]; then
    db=$(mktemp -d)
    trap 'rm -rf "$db"' EXIT
    : > "$db/index.txt"
    for n in "${revoked[@]}"; do
        cert=""
        for f in "$out/worker-$n.pem" "$out/client-$n.pem"; do [ -s "$f" ] && cert=$f; done
        [ -n "$cert" ] || { echo "gen-certs.sh: no certificate for $n to revoke" >&2; exit 2; }
        serial=$(openssl x509 -in "$cert" -noout -serial | cut -d= -f2)
        end=$(date -u -d "$(openssl x509 -in "$cert" -noout -enddate | cut -d= -f2)" +%y%m%d%H%M%SZ)
        subject=$(openssl x509 -in "$cert" -noout -subject -nameopt compat | sed 's/^subject=//')
        printf 'R\t%s\t%s\t%s\tunknown\t%s\n' "$end" "$(date -u +%y%m%d%H%M%SZ)" "$serial" "$subject" >> "$db/index.txt"
    done
    date -u +%s > "$db/crlnumber"
    printf '[ca]\ndefault_ca = kiln\n[kiln]\ndatabase = %s\ncrlnumber = %s\ndefault_md = sha256\ndefault_crl_days = %s\n' \
        "$db/index.txt" "$db/crlnumber" "$days" > "$db/ca.cnf"
    openssl ca -gencrl -config "$db/ca.cnf" -keyfile "$out/ca.key" -cert "$out/ca.pem" \
        -out "$out/crl.pem" 2>/dev/null
    chmod 0644 "$out/crl.pem"
    echo "made $out/crl.pem (${revoked[*]})"
fi
