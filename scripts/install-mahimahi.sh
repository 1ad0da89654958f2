#!/usr/bin/env bash
# Builds and installs Mahimahi (mm-link, mm-delay, ...; setuid root in /usr/local/bin) from source.
#
#   scripts/install-mahimahi.sh SOURCE.tar.gz   # a source tarball (CI: ../shared/vendor/mahimahi-*.tar.gz)
#   scripts/install-mahimahi.sh SOURCE_DIR      # an unpacked source tree
#   scripts/install-mahimahi.sh                 # a fresh clone of the public repository (needs the network)
#
# As root, on Debian or Ubuntu: installs the build dependencies with apt, builds in a temporary
# directory (about 5 minutes of make on 2 cores) and runs `make install`. On Ubuntu,
# `apt-get install mahimahi` is the quicker way. Mahimahi's tools refuse to run as root: Streambed
# runs them as an unprivileged user (README, "Link kinds").
set -euo pipefail
REPO=https://github.com/ravinet/mahimahi
src=${1:-}

if [[ $(id -u) -ne 0 ]]; then
    echo "install-mahimahi: run as root (apt-get and a setuid make install)" >&2
    exit 2
fi
if [[ -n "$src" && ! -e "$src" ]]; then
    echo "install-mahimahi: $src: no such file or directory" >&2
    exit 2
fi

deps=(build-essential autoconf automake libtool pkg-config protobuf-compiler libprotobuf-dev
    libssl-dev libxcb-present-dev libcairo2-dev libpango1.0-dev apache2-dev apache2 ssl-cert
    iptables dnsmasq-base git)
missing=()
for d in "${deps[@]}"; do
    dpkg-query -W -f='${Status}' "$d" 2>/dev/null | grep -q "install ok installed" || missing+=("$d")
done
if ((${#missing[@]})); then
    echo "install-mahimahi: installing build dependencies: ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# configure looks for Apache's snakeoil certificate pair.
[[ -f /etc/ssl/certs/ssl-cert-snakeoil.pem ]] || make-ssl-cert generate-default-snakeoil --force-overwrite

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if [[ -z "$src" ]]; then
    git clone --depth 1 "$REPO" "$work/mahimahi"
    tree=$work/mahimahi
elif [[ -d "$src" ]]; then
    cp -a "$src" "$work/mahimahi"
    tree=$work/mahimahi
else
    tar -xzf "$src" -C "$work"
    tree=$(find "$work" -mindepth 1 -maxdepth 2 -name configure.ac -printf '%h\n' | head -n1)
    if [[ -z "$tree" ]]; then
        echo "install-mahimahi: $src: no configure.ac inside (not a Mahimahi source tarball?)" >&2
        exit 2
    fi
fi

cd "$tree"
echo "install-mahimahi: building in $tree" >&2
./autogen.sh >/dev/null
./configure --quiet >/dev/null
make -s -j"$(nproc)" >/dev/null
# DESTDIR (optional) stages the install under a folder, as the Docker build does.
make -s install DESTDIR="${DESTDIR:-}" >/dev/null
echo "install-mahimahi: installed ${DESTDIR:-}/usr/local/bin/mm-link" >&2
