#!/usr/bin/env bash
# Installs what Streambed needs on a fresh Debian/Ubuntu machine: the system packages (ffmpeg for
# real DASH content, iproute2 for the netns link, nodejs and npm for the dash.js player of
# `streambed play --browser`; with --dev also chromium, in which the tests render the HTML
# report and play dash.js) when they are missing, then a virtualenv in .venv with the pinned CPU
# build of torch, then the dash.js player's npm packages in player/web/node_modules (npm ci,
# pinned by player/web/package-lock.json). `--dev` adds the test and lint tools and Ray (the
# `cluster` extra, for `emulate --cluster`), and (as root)
# builds Mahimahi from ../shared/vendor/mahimahi-*.tar.gz when mm-link is missing and sets
# net.ipv4.ip_forward=1, for tests/test_mahimahi.py.
#
# Without --dev, Node.js, npm and Chromium are optional (only `play --browser` needs them):
# as root the missing nodejs/npm are installed, otherwise they are reported and skipped.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev,cluster]"

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ip >/dev/null || missing+=(iproute2)
node_missing=()
command -v node >/dev/null || node_missing+=(nodejs)
command -v npm >/dev/null || node_missing+=(npm)
if [[ -n "$extra" ]]; then
    command -v chromium >/dev/null || missing+=(chromium)
    missing+=(${node_missing[@]+"${node_missing[@]}"})
elif ((${#node_missing[@]})); then
    if [[ $(id -u) -eq 0 ]]; then
        missing+=("${node_missing[@]}")
    else
        echo "setup: ${node_missing[*]} missing (install as root, or run this as root):" \
            "'streambed play --browser' will not work until then" >&2
    fi
fi
if ((${#missing[@]})); then
    if [[ $(id -u) -ne 0 ]]; then
        echo "setup: install these packages first (as root): ${missing[*]}" >&2
        exit 1
    fi
    echo "setup: installing ${missing[*]}" >&2
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[[ -x .venv/bin/python ]] || python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt -e ".${extra}"

# The dash.js player (player/web): dashjs and playwright-core, exactly as the lockfile pins them,
# whenever they are missing or the lockfile is newer than the installed tree. No install
# scripts run, and no browser is ever downloaded (the system's chromium is driven).
web=player/web
if [[ ! -f $web/node_modules/dashjs/package.json || ! -f $web/node_modules/playwright-core/package.json ||
    $web/package-lock.json -nt $web/node_modules/.package-lock.json ]]; then
    if command -v npm >/dev/null; then
        echo "setup: installing the dash.js player's npm packages (npm ci in $web)" >&2
        npm ci --prefix "$web" --no-audit --no-fund --ignore-scripts --loglevel=error
    else
        echo "setup: npm is missing: skipped the dash.js player's packages ($web/node_modules);" \
            "'streambed play --browser' needs them (install nodejs and npm, then run this again)" >&2
    fi
fi
# Mahimahi (the mahimahi link; tests/test_mahimahi.py runs the real mm-link): built from the
# vendored source tarball when mm-link is missing, plus the IP forwarding it needs.
if [[ -n "$extra" ]]; then
    if ! command -v mm-link >/dev/null; then
        tarball=$(ls ../shared/vendor/mahimahi-*.tar.gz ../../shared/vendor/mahimahi-*.tar.gz \
            2>/dev/null | head -n1 || true)
        if [[ -z "$tarball" ]]; then
            echo "setup: mm-link is missing and no ../shared/vendor/mahimahi-*.tar.gz found:" \
                "tests/test_mahimahi.py will fail (run scripts/install-mahimahi.sh [SOURCE] as" \
                "root, or apt-get install mahimahi on Ubuntu)" >&2
        elif [[ $(id -u) -ne 0 ]]; then
            echo "setup: mm-link is missing: run scripts/install-mahimahi.sh $tarball as root" >&2
        else
            echo "setup: building Mahimahi from $tarball (about 5 minutes)" >&2
            scripts/install-mahimahi.sh "$tarball"
        fi
    fi
    if [[ $(cat /proc/sys/net/ipv4/ip_forward 2>/dev/null) != 1 ]]; then
        if [[ $(id -u) -eq 0 ]]; then
            sysctl -q -w net.ipv4.ip_forward=1
        else
            echo "setup: the mahimahi link needs net.ipv4.ip_forward=1 (sysctl, as root)" >&2
        fi
    fi
fi
if [[ -z "$extra" ]] && ! command -v chromium >/dev/null; then
    echo "setup: chromium is missing: 'streambed play --browser' needs it (apt-get install" \
        "chromium, or scripts/setup.sh --dev as root)" >&2
fi
