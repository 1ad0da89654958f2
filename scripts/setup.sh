#!/usr/bin/env bash
# Installs what Streambed needs on a fresh Debian/Ubuntu machine: the system packages (ffmpeg for
# real DASH content, iproute2 for the netns link; with --dev also chromium, in which the tests
# render the HTML report) when they are missing, then a virtualenv in .venv with the pinned CPU
# build of torch. `--dev` adds the test and lint tools.
set -euo pipefail
cd "$(dirname "$0")/.."
extra=""
[[ "${1:-}" == "--dev" ]] && extra="[dev]"

missing=()
command -v ffmpeg >/dev/null || missing+=(ffmpeg)
command -v ip >/dev/null || missing+=(iproute2)
if [[ -n "$extra" ]]; then
    command -v chromium >/dev/null || missing+=(chromium)
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
