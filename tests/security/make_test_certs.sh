#!/usr/bin/env bash
# Generates throw-away TLS material for the security tests (never committed):
#   ca.pem               the trusted CA (ca.key stays beside it)
#   other-ca.pem         a second CA nobody trusts
#   server.pem/.key      signed by ca: SAN IP:127.0.0.1 and DNS:localhost,
#                        for serving and as the servers' client certificate
#   client.pem/.key      signed by ca, client authentication only
#   untrusted-client.pem/.key   signed by other-ca
#   token                a bearer token (one line)
# Usage: make_test_certs.sh OUT_DIR   (created if missing; files replaced)
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 OUT_DIR" >&2
  exit 2
fi
out=$1
mkdir -p "$out"
cd "$out"
umask 077

key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1" 2> /dev/null; }

ca() {  # ca NAME SUBJECT
  key "$1.key"
  openssl req -x509 -new -key "$1.key" -subj "$2" -days 2 -sha256 \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" -out "$1.pem"
}

leaf() {  # leaf NAME SUBJECT CA EXTENSIONS
  key "$1.key"
  openssl req -new -key "$1.key" -subj "$2" -out "$1.csr"
  printf '%b' "$4" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA "$3.pem" -CAkey "$3.key" -CAcreateserial \
    -days 2 -sha256 -extfile "$1.ext" -out "$1.pem" 2> /dev/null
  rm -f "$1.csr" "$1.ext"
}

ca ca "/CN=moe-cluster test CA"
ca other-ca "/CN=untrusted test CA"
leaf server "/CN=moe-cluster server" ca \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth,clientAuth\nsubjectAltName=IP:127.0.0.1,DNS:localhost\n"
leaf client "/CN=moe-cluster client" ca \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
leaf untrusted-client "/CN=untrusted client" other-ca \
  "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature\nextendedKeyUsage=clientAuth\n"
openssl rand -hex 24 > token
rm -f ./*.srl
