#!/usr/bin/env bash
# CI's compose stage: the Docker stack for real, on a machine with or without a Docker engine.
#
#   scripts/compose-ci.sh [--keep]      # as root; --keep leaves dockerd and the images running
#
#  1. engine: when `docker info` fails, installs Debian's docker.io and docker-compose and starts
#     dockerd (vfs storage: works inside a container or sandbox with no overlay support);
#  2. base: a Debian bookworm image made locally with debootstrap (no image registry is
#     needed), cached in /var/cache/streambed between runs on the same machine;
#  3. build: docker/Dockerfile on that base with Mahimahi built from ../shared/vendor's tarball,
#     pip behind this machine's CA bundle, and this machine's CPU torch wheel when pip has one;
#  4. up: `compose up --exit-code-from emulator` with the small default (48 s of video, 4
#     traces, 12 sessions behind Mahimahi links); checks the report, that every session
#     completed with no fallback decision, and that origin and abr were healthy;
#  5. trainer: `compose --profile trainer up -d trainer` for STREAMBED_TRAIN_MINUTES (default 1),
#     then checks that abr serves the checkpoint it pushed, under `ppo`;
#  6. `compose down -v`, and stops the dockerd it started.
# Each step prints its wall time. Exit status: 0 when every check passed.
set -euo pipefail
cd "$(dirname "$0")/.."
keep=0
[[ "${1:-}" == "--keep" ]] && keep=1
if [[ $(id -u) -ne 0 ]]; then
    echo "compose-ci: run as root (it may install and start a Docker engine)" >&2
    exit 2
fi
SHARED=${STREAMBED_SHARED:-../shared}
CACHE=${STREAMBED_CACHE:-/var/cache/streambed}
BASE=streambed-base:bookworm
PROJECT=streambed-ci
export COMPOSE_PROJECT_NAME=$PROJECT STREAMBED_TRAIN_MINUTES=${STREAMBED_TRAIN_MINUTES:-1}
mkdir -p "$CACHE"
t0=$SECONDS
step() { echo "compose-ci: [$((SECONDS - t0)) s] $*" >&2; }
fail() { echo "compose-ci: FAILED: $*" >&2; exit 1; }

# 1. The engine.
dockerd_pid=""
if ! docker info >/dev/null 2>&1; then
    if ! command -v dockerd >/dev/null || ! command -v docker-compose >/dev/null ||
        ! command -v debootstrap >/dev/null; then
        step "installing docker.io, docker-compose and debootstrap"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            docker.io docker-compose debootstrap >/dev/null
    fi
    # overlay2 shares image layers between stages and containers; vfs (a full copy per layer
    # and per container: tens of GB for this stack) is the fallback where overlay mounts fail.
    for driver in overlay2 vfs; do
        step "starting dockerd ($driver storage; log $CACHE/dockerd.log)"
        dockerd --storage-driver "$driver" >"$CACHE/dockerd.log" 2>&1 &
        dockerd_pid=$!
        for _ in $(seq 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
        if docker info >/dev/null 2>&1; then
            break
        fi
        kill "$dockerd_pid" 2>/dev/null || true
        wait "$dockerd_pid" 2>/dev/null || true
        dockerd_pid=""
    done
    [[ -n "$dockerd_pid" ]] || fail "dockerd did not start (see $CACHE/dockerd.log)"
fi
command -v debootstrap >/dev/null || {
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
}

# BuildKit (the Dockerfile's stage skipping and its .dockerignore) through whichever client
# has it: one with the buildx plugin, or Debian's own client (20.10), whose BuildKit is built in.
builder=()
for client in $(which -a docker); do
    if "$client" buildx version >/dev/null 2>&1; then
        builder=("$client" build)
        break
    fi
    major=$("$client" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
    if [[ -n "$major" && "$major" -lt 23 ]]; then
        builder=(env DOCKER_BUILDKIT=1 "$client" build)
        break
    fi
done
((${#builder[@]})) || fail "no docker client with BuildKit (install docker-buildx or Debian's docker.io)"
if docker compose version >/dev/null 2>&1; then
    compose=(docker compose)
else
    compose=(docker-compose)
fi
# The file must parse with both: compose v2 (the plugin) and Debian's docker-compose 1.29.
docker compose version >/dev/null 2>&1 && { docker compose config --quiet || fail "docker compose config"; }
command -v docker-compose >/dev/null && { docker-compose config --quiet || fail "docker-compose config"; }
step "engine $(docker version --format '{{.Server.Version}}'), build with ${builder[*]}, compose: ${compose[*]}"

cleanup() {
    local rc=$?
    if ((!keep)); then
        "${compose[@]}" --profile trainer down -v --remove-orphans >/dev/null 2>&1 || true
        if [[ -n "$dockerd_pid" ]]; then
            kill "$dockerd_pid" 2>/dev/null || true
            wait "$dockerd_pid" 2>/dev/null || true
        fi
    fi
    step "done (exit $rc)"
}
trap cleanup EXIT

# 2. The base image.
if ! docker image inspect "$BASE" >/dev/null 2>&1; then
    if [[ ! -s $CACHE/bookworm-minbase.tar ]]; then
        step "debootstrap --variant=minbase bookworm"
        root=$(mktemp -d)
        debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
            fail "debootstrap (see $CACHE/debootstrap.log)"
        tar -C "$root" -cf "$CACHE/bookworm-minbase.tar.tmp" .
        mv "$CACHE/bookworm-minbase.tar.tmp" "$CACHE/bookworm-minbase.tar"
        rm -rf "$root"
    fi
    step "importing $BASE"
    docker import "$CACHE/bookworm-minbase.tar" "$BASE" >/dev/null
fi

# 3. The image.
extra=docker/extra
find "$extra" -mindepth 1 ! -name README.md -delete
tarball=$(ls "$SHARED"/vendor/mahimahi-*.tar.gz 2>/dev/null | head -n1 || true)
[[ -n "$tarball" ]] || fail "no $SHARED/vendor/mahimahi-*.tar.gz (Mahimahi's source; set STREAMBED_SHARED)"
cp "$tarball" "$extra/"
cert=$(python3 -m pip config get global.cert 2>/dev/null || true)
[[ -f "$cert" ]] || cert=/etc/ssl/certs/ca-certificates.crt
[[ -f "$cert" ]] && cp "$cert" "$extra/ca-certificates.crt"
torch_index=https://download.pytorch.org/whl/cpu
for dir in $(python3 -m pip config list 2>/dev/null | sed -n "s/.*find-links='\(.*\)'/\1/p"); do
    for wheel in "$dir"/torch-*+cpu-cp311-*.whl; do
        [[ -f "$wheel" ]] || continue
        cp "$wheel" "$extra/"
        torch_index=""  # the local wheel; PyTorch's index may be out of reach
    done
done
step "building streambed:latest (Debian base, Mahimahi from $(basename "$tarball"))"
"${builder[@]}" --progress=plain -f docker/Dockerfile --build-arg BASE="$BASE" \
    --build-arg MAHIMAHI=source --build-arg TORCH_INDEX="$torch_index" \
    -t streambed:latest . >"$CACHE/build.log" 2>&1 || {
    tail -n 40 "$CACHE/build.log" >&2
    fail "docker build (log $CACHE/build.log)"
}
size=$(docker image inspect streambed:latest --format '{{.Size}}')
step "image streambed:latest: $((size / 1000000)) MB"
docker run --rm --entrypoint sh streambed:latest -c 'test -u "$(command -v mm-link)" && test -u "$(command -v mm-delay)"' ||
    fail "mm-link and mm-delay are not setuid root in the image"

# 4. The stack.
"${compose[@]}" --profile trainer down -v --remove-orphans >/dev/null 2>&1 || true
rm -rf results
step "compose up --exit-code-from emulator"
"${compose[@]}" up --no-build --exit-code-from emulator || fail "compose up exited with $?"
step "checking results/"
python3 - <<'EOF' || fail "the report"
import json
import pathlib
import sys

results = pathlib.Path("results")
summary = json.loads((results / "summary.json").read_text())
sessions = summary["sessions"]
problems = []
if not summary.get("complete"):
    problems.append("summary.json: not complete")
if sessions["failed"] or sessions["done"] != sessions["planned"] or sessions["planned"] == 0:
    problems.append(f"sessions: {sessions}")
if summary.get("link") != "mahimahi":
    problems.append(f"link: {summary.get('link')}")
fallbacks = 0
for log in results.glob("sessions/**/*.jsonl"):
    for line in log.read_text().splitlines():
        fallbacks += bool(json.loads(line).get("fallback"))
if fallbacks:
    problems.append(f"{fallbacks} fallback decisions")
page = (results / "report.html").read_text()
if 'id="sim-vs-emu"' not in page:
    problems.append("report.html has no simulation-against-emulation section")
print(f"compose-ci: {sessions['done']}/{sessions['planned']} sessions, link {summary.get('link')}, "
      f"{fallbacks} fallbacks; per algorithm: "
      + ", ".join(f"{a} {s['qoe_mean']:.3f}" for a, s in summary["algorithms"].items()),
      file=sys.stderr)
if problems:
    print("compose-ci: " + "; ".join(problems), file=sys.stderr)
    sys.exit(1)
EOF
# --exit-code-from stops the stack (a probe during the stop fails): origin and abr passed
# every health check they kept (the last 5) that ended before the emulator finished.
docker inspect "$("${compose[@]}" ps -q emulator)" "$("${compose[@]}" ps -q origin)" \
    "$("${compose[@]}" ps -q abr)" | python3 -c '
import json, sys
emulator, *services = json.load(sys.stdin)
finished = emulator["State"]["FinishedAt"]
for service in services:
    probes = [p for p in service["State"]["Health"]["Log"] if p["End"][:19] < finished[:19]]
    failed = [p for p in probes if p["ExitCode"] != 0]
    name = service["Name"].lstrip("/")
    if not probes or failed:
        sys.exit(f"compose-ci: {name}: {len(failed)} of {len(probes)} health checks failed")
    print(f"compose-ci: {name}: {len(probes)} health checks passed before the emulator ended",
          file=sys.stderr)
' || fail "health checks"

# 5. The trainer profile.
step "compose --profile trainer up -d trainer (${STREAMBED_TRAIN_MINUTES} min)"
"${compose[@]}" --profile trainer up --no-build -d trainer
trainer=$("${compose[@]}" ps -q trainer)
code=$(docker wait "$trainer")
[[ "$code" == 0 ]] || {
    docker logs --tail 40 "$trainer" >&2
    fail "the trainer exited with $code"
}
step "checking that abr serves the pushed checkpoint"
python3 - <<'EOF' || fail "abr does not serve the trainer's checkpoint"
import json
import sys
import urllib.request

listing = json.load(urllib.request.urlopen("http://127.0.0.1:8333/models", timeout=10))
active = listing["active"].get("ppo", "")
if not active.startswith("ppo-"):
    sys.exit(f"compose-ci: ppo is served by {active!r}, not the trainer's run: {listing}")
body = json.dumps({"session_id": "compose-ci", "chunk_index": 0, "buffer_s": 0.0,
                   "algorithm": "ppo"}).encode()
request = urllib.request.Request("http://127.0.0.1:8333/decide", data=body,
                                 headers={"Content-Type": "application/json"})
decision = json.load(urllib.request.urlopen(request, timeout=10))
if decision.get("fallback"):
    sys.exit(f"compose-ci: /decide fell back: {decision}")
print(f"compose-ci: abr serves {active} for ppo; /decide -> quality {decision['quality']}",
      file=sys.stderr)
EOF
step "all checks passed"
