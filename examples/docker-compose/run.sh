#!/usr/bin/env bash
# The seed's story with Docker Compose: a Node.js app in Analysis Corp's
# network queries Bank Corp's PostgreSQL through a Sluice portal. Each
# company's network is isolated and publishes no port; both agents dial out
# to the hub, a container on its own "internet" network with the only
# published port.
#
#   ./run.sh [explicit]    build the images, start the hub, create the tickets,
#                          bring up bank_corp and analysis_corp (the app dials
#                          the agent's explicit inlet, sluice:15432)
#   ./run.sh transparent   the same, with analysis_corp's transparent variant:
#                          the agent on the host's network steers the app's
#                          connections to 10.200.0.10:5432 with BPF (Linux,
#                          kernel 6.6+ or clsact; needs the capabilities in
#                          analysis_corp/docker-compose.transparent.yml)
#   ./run.sh build [agent|postgres|app]...
#                          build those images only (all three by default)
#   ./run.sh cleanup       remove every container, network, volume, image and
#                          BPF pin it made
#
# Run it again to play it again: the hub and its project stay, bank_corp and
# analysis_corp are made anew with new tickets.
#
# Environment (all optional):
#   DOCKER              the docker client (default: docker)
#   COMPOSE             the compose command (default: "docker compose" if it
#                       works, else docker-compose)
#   BASE_IMAGE          base of the PostgreSQL and app images (default
#                       debian:bookworm-slim; make compose-test passes a local
#                       image made with debootstrap)
#   GO_IMAGE            the agent image's build stage (default golang:1.26-bookworm)
#   SLUICE_HUB_PORT     the hub's published port on this machine (default 4443)
#   SLUICE_HUB_ADDRESS  HOST:PORT the agents dial (default
#                       host.docker.internal:$SLUICE_HUB_PORT: this machine,
#                       through each network's egress)
#   SLUICE_MARKER       a string the app stores in its rows
#   SLUICE_SKIP_BUILD=1 use the images as they are
#   SLUICE_BEFORE_START a command run once every network exists, before any
#                       company container starts (make compose-test starts its
#                       packet captures there)
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
root=$(cd ../.. && pwd)

DOCKER=${DOCKER:-docker}
if [ -z "${COMPOSE:-}" ]; then
  if $DOCKER compose version >/dev/null 2>&1; then COMPOSE="$DOCKER compose"; else COMPOSE=docker-compose; fi
fi
BASE_IMAGE=${BASE_IMAGE:-debian:bookworm-slim}
GO_IMAGE=${GO_IMAGE:-golang:1.26-bookworm}
HUB_PORT=${SLUICE_HUB_PORT:-4443}
HUB_ADDRESS=${SLUICE_HUB_ADDRESS:-host.docker.internal:$HUB_PORT}

# Everything this script makes is named sluice-example*, bank_corp-* or
# analysis_corp-*, and labeled, so that cleanup finds it all.
label=org.sluice.example=docker-compose
export SLUICE_AGENT_IMAGE=sluice-example/agent
export SLUICE_POSTGRES_IMAGE=sluice-example/postgres
export SLUICE_APP_IMAGE=sluice-example/app
hub=sluice-example-hub
internet=sluice-example_internet
project=sluice-example_project
bpf_dir=/sys/fs/bpf/sluice-example

log() { printf '\n== %s\n' "$*"; }

bank() { $COMPOSE -p bank_corp -f "$here/bank_corp/docker-compose.yml" "$@"; }
analysis_file() {
  case $1 in
    explicit) echo "$here/analysis_corp/docker-compose.yml" ;;
    transparent) echo "$here/analysis_corp/docker-compose.transparent.yml" ;;
  esac
}
analysis() { local v=$1; shift; $COMPOSE -p analysis_corp -f "$(analysis_file "$v")" "$@"; }

# build_images [agent] [postgres] [app]: builds those images (all three by
# default), side by side.
build_images() {
  local want=" ${*:-agent postgres app} "
  log "building the images:$want(base $BASE_IMAGE, Go $GO_IMAGE)"
  local logs pids=() names=() i failed=0
  logs=$(mktemp -d)
  # deploy/docker/Dockerfile uses RUN --mount=type=cache: BuildKit. The
  # builds run side by side (the agent's compiles, the others download).
  if [[ $want == *" agent "* ]]; then
    DOCKER_BUILDKIT=1 $DOCKER build --label "$label" -f "$root/deploy/docker/Dockerfile" \
      --build-arg GO_IMAGE="$GO_IMAGE" \
      --build-arg VERSION="$(git -C "$root" describe --tags --always --dirty 2>/dev/null || echo example)" \
      --build-arg REVISION="$(git -C "$root" rev-parse HEAD 2>/dev/null || true)" \
      -t "$SLUICE_AGENT_IMAGE" "$root" >"$logs/agent" 2>&1 &
    pids+=($!) names+=(agent)
  fi
  if [[ $want == *" postgres "* ]]; then
    DOCKER_BUILDKIT=1 $DOCKER build --label "$label" -f "$here/bank_corp/postgres.dockerfile" \
      --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$SLUICE_POSTGRES_IMAGE" "$here/bank_corp" >"$logs/postgres" 2>&1 &
    pids+=($!) names+=(postgres)
  fi
  if [[ $want == *" app "* ]]; then
    DOCKER_BUILDKIT=1 $DOCKER build --label "$label" -f "$here/analysis_corp/app.dockerfile" \
      --build-arg BASE_IMAGE="$BASE_IMAGE" -t "$SLUICE_APP_IMAGE" "$root/testenv/scenario/app" >"$logs/app" 2>&1 &
    pids+=($!) names+=(app)
  fi
  for i in "${!pids[@]}"; do
    if ! wait "${pids[$i]}"; then
      echo "run.sh: building the ${names[$i]} image failed:" >&2
      tail -n 30 "$logs/${names[$i]}" >&2
      failed=1
    fi
  done
  rm -rf "$logs"
  [ "$failed" = 0 ] || exit 1
  echo "built:$want"
}

agentctl() { $DOCKER exec "$hub" /usr/bin/agentctl "$@"; }

# The hub: authority and relay, on the "internet" network, its port published
# on this machine: the only port of the story anyone can dial.
start_hub() {
  if [ "$($DOCKER inspect -f '{{.State.Running}}' "$hub" 2>/dev/null)" = true ]; then
    log "the hub is running ($hub)"
    return
  fi
  log "starting the hub on the internet network, port $HUB_PORT, address $HUB_ADDRESS"
  $DOCKER network inspect "$internet" >/dev/null 2>&1 ||
    $DOCKER network create --label "$label" -o com.docker.network.bridge.name=sl-internet "$internet" >/dev/null
  # Create the project (authority key, hub certificate for HUB_ADDRESS's host,
  # project ID, hub.db) in a new volume, the first time.
  if ! $DOCKER volume inspect "$project" >/dev/null 2>&1; then
    $DOCKER volume create --label "$label" "$project" >/dev/null
    $DOCKER run --rm --label "$label" -v "$project:/project" --entrypoint /usr/bin/agentctl "$SLUICE_AGENT_IMAGE" \
      project init --dir /project/p --hub-address "$HUB_ADDRESS" >/dev/null
  fi
  $DOCKER rm -f "$hub" >/dev/null 2>&1 || true
  # --no-healthcheck: the image's health check asks an agent, not a hub.
  $DOCKER run -d --name "$hub" --label "$label" --network "$internet" -p "$HUB_PORT:4443" --no-healthcheck \
    -v "$project:/project" "$SLUICE_AGENT_IMAGE" hub --project /project/p --listen 0.0.0.0:4443 >/dev/null
  agentctl wait --ready --project /project/p --timeout 60s
}

tickets() {
  log "creating the enrollment tickets (one use, 10 minutes)"
  # Bank Corp's agent: attribute postgres-outlet, may claim the relay name postgres.
  bank_ticket=$(agentctl ticket create --project /project/p --attribute postgres-outlet=true --relay postgres)
  # Analysis Corp's agent: attribute postgres-inlet.
  analysis_ticket=$(agentctl ticket create --project /project/p --attribute postgres-inlet=true)
  echo "bank_corp: ${bank_ticket:0:32}..."
  echo "analysis_corp: ${analysis_ticket:0:32}..."
}

run() {
  local variant=$1
  [ "${SLUICE_SKIP_BUILD:-}" = 1 ] || build_images
  start_hub
  tickets
  # Start afresh: a new ticket is a new node.
  down_companies
  log "creating bank_corp's and analysis_corp's networks and containers ($variant)"
  SLUICE_TICKET=$bank_ticket bank up --no-start
  # Not the app yet: in the transparent variant it joins app-net's network
  # namespace, which must be running when the app's container is made.
  SLUICE_TICKET=$analysis_ticket analysis "$variant" up --no-start sluice
  if [ -n "${SLUICE_BEFORE_START:-}" ]; then
    bash -c "$SLUICE_BEFORE_START"
  fi
  log "bank_corp: PostgreSQL, then its companion agent once PostgreSQL is healthy"
  SLUICE_TICKET=$bank_ticket bank up -d
  wait_healthy bank_corp-sluice
  log "analysis_corp: the agent, then the app once the agent is ready"
  SLUICE_TICKET=$analysis_ticket analysis "$variant" up -d
  local code
  code=$($DOCKER wait analysis_corp-app)
  $DOCKER logs analysis_corp-app 2>&1
  if [ "$code" != 0 ]; then
    echo "run.sh: the app exited with status $code; the agents' logs:" >&2
    $DOCKER logs --tail 30 analysis_corp-sluice >&2 2>&1 || true
    $DOCKER logs --tail 30 bank_corp-sluice >&2 2>&1 || true
    exit 1
  fi
  log "done: ./run.sh cleanup removes everything"
}

wait_healthy() {
  local s
  for _ in $(seq 1 90); do
    s=$($DOCKER inspect -f '{{.State.Health.Status}}' "$1" 2>/dev/null || echo missing)
    case $s in
      healthy) return 0 ;;
      unhealthy|missing) break ;;
    esac
    sleep 1
  done
  echo "run.sh: $1 is $s; its log:" >&2
  $DOCKER logs --tail 40 "$1" >&2 2>&1 || true
  exit 1
}

down_companies() {
  # The transparent agent's pins outlive it (fail closed): stop it, then remove them.
  if $DOCKER inspect analysis_corp-sluice >/dev/null 2>&1; then
    $DOCKER stop analysis_corp-sluice >/dev/null 2>&1 || true
  fi
  if [ -d "$bpf_dir" ]; then
    $DOCKER run --rm --label "$label" --network host -v /sys/fs/bpf:/sys/fs/bpf \
      --cap-add NET_ADMIN --cap-add SYS_ADMIN \
      "$SLUICE_AGENT_IMAGE" cleanup --bpf-dir "$bpf_dir" >/dev/null
  fi
  for v in explicit transparent; do analysis "$v" down --remove-orphans >/dev/null 2>&1 || true; done
  bank down --remove-orphans >/dev/null 2>&1 || true
}

cleanup() {
  log "removing the containers, networks, volume, images and pins of the example"
  down_companies
  $DOCKER rm -f "$hub" >/dev/null 2>&1 || true
  # Anything else labeled as ours (a container a failed run left).
  $DOCKER ps -aq --filter "label=$label" | xargs -r $DOCKER rm -f >/dev/null
  $DOCKER network rm "$internet" >/dev/null 2>&1 || true
  $DOCKER volume rm "$project" >/dev/null 2>&1 || true
  $DOCKER image rm "$SLUICE_AGENT_IMAGE" "$SLUICE_POSTGRES_IMAGE" "$SLUICE_APP_IMAGE" >/dev/null 2>&1 || true
  echo "removed"
}

case "${1:-explicit}" in
  explicit|transparent) run "${1:-explicit}" ;;
  build)
    shift
    for n in "$@"; do
      case $n in agent|postgres|app) ;; *) echo "run.sh build: no image $n (agent, postgres, app)" >&2; exit 2 ;; esac
    done
    build_images "$@" ;;
  cleanup) cleanup ;;
  *) echo "usage: $0 [explicit|transparent|build [agent|postgres|app]...|cleanup]" >&2; exit 2 ;;
esac
