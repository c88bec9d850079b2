#!/usr/bin/env bash
# make compose-test: plays examples/docker-compose on this machine with
# Debian's Docker engine (20.10) and docker-compose (1.29), no image registry
# needed, and checks it:
#   - both variants (explicit inlet, transparent inlet) print the seed's rows
#     and "The example run was successful";
#   - isolation: PostgreSQL's container address is unreachable from
#     analysis_corp's network, from the app's own network namespace and from
#     the internet network (Docker drops the packets: the connect times out),
#     while a container on bank_corp's network reaches it (the probe works);
#     the hub's is the only published port;
#   - no plaintext on the internet network: a capture on its bridge holds the
#     portal's sessions (through the hub: SLD2 preambles on the hub's port;
#     direct between the agents: TLS records on no port of the hub's,
#     docs/direct-paths.md) and never the rows' marker, which a capture on
#     analysis_corp's bridge (app to agent, in the clear) holds.
# It installs docker.io, docker-compose and debootstrap if missing, starts
# dockerd if none runs, makes the base image with debootstrap (the root file
# system is kept in $SLUICE_COMPOSE_CACHE for the next run) and a Go build
# image from this machine's toolchain, and on exit, failed or not, removes
# every container, network, volume, image and BPF pin it made, stops the
# captures and the dockerd it started, and undoes what that dockerd did to
# the host (dockerd.sh). Needs root. SLUICE_COMPOSE_KEEP=1 keeps it all, to
# look at a failure.
set -euo pipefail
cd "$(dirname "$0")"
here=$PWD
t0=$(date +%s)

# Debian's client and compose, explicitly: /usr/local/bin/docker may be a
# newer client whose `docker build` wants buildx, and `docker compose` (v2)
# is not packaged in Debian 12.
export DOCKER=/usr/bin/docker
export COMPOSE=/usr/bin/docker-compose
cache=${SLUICE_COMPOSE_CACHE:-/var/cache/sluice-compose}
base=sluice-example/debian:bookworm
gover=$(go env GOVERSION)
goimage=sluice-example/go:${gover#go}
export BASE_IMAGE=$base GO_IMAGE=$goimage
# A port nothing else here uses; the agents dial it through their egress.
export SLUICE_HUB_PORT=${SLUICE_HUB_PORT:-24443}
export SLUICE_MARKER=sluice-compose-$(head -c 6 /dev/urandom | od -An -tx1 | tr -d ' \n')
work=$(mktemp -d /tmp/sluice-compose-test.XXXXXX)

elapsed() { echo "$(( $(date +%s) - t0 )) s"; }
fail() { echo "compose-test: FAIL: $*" >&2; exit 1; }

need=()
[ -x /usr/sbin/dockerd ] && [ -x /usr/bin/docker ] || need+=(docker.io)
[ -x /usr/bin/docker-compose ] || need+=(docker-compose)
command -v debootstrap >/dev/null 2>&1 || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
command -v iptables >/dev/null 2>&1 || need+=(iptables)
command -v tcpdump >/dev/null 2>&1 || need+=(tcpdump)
dpkg-query -W -f='${Status}' busybox-static 2>/dev/null | grep -q 'ok installed' || need+=(busybox-static)
if [ ${#need[@]} -gt 0 ]; then
  echo "compose-test: installing ${need[*]}"
  apt-get update -qq -o DPkg::Lock::Timeout=300
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends -o DPkg::Lock::Timeout=300 "${need[@]}" >/dev/null
fi

# stop_captures stops the tcpdumps run.sh's hook started (their pids in
# $work/*.pid) and waits until they have written their files.
stop_captures() {
  local f pid
  for f in "$work"/*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    rm -f "$f"
    kill -INT "$pid" 2>/dev/null || continue
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
  done
}

cleanup() {
  local code=$?
  set +e
  if [ -n "${agent_build:-}" ] && kill -0 "$agent_build" 2>/dev/null; then
    # The agent's build, still running: its docker client, then run.sh.
    kill $(ps -o pid= --ppid "$agent_build") "$agent_build" 2>/dev/null
    wait "$agent_build" 2>/dev/null
  fi
  stop_captures
  if [ -n "${SLUICE_COMPOSE_KEEP:-}" ]; then
    echo "compose-test: SLUICE_COMPOSE_KEEP is set: everything stays (captures in $work); ./run.sh cleanup and ./dockerd.sh stop remove it"
    exit $code
  fi
  ./run.sh cleanup >/dev/null 2>&1 || echo "compose-test: run.sh cleanup failed" >&2
  $DOCKER image rm "$base" "$goimage" >/dev/null 2>&1
  rm -rf "$work"
  ./dockerd.sh stop
  echo "compose-test: done in $(elapsed), status $code"
  exit $code
}
trap cleanup EXIT
trap 'exit 130' INT TERM

./dockerd.sh start

# The agent image's build stage, as deploy/docker/build.sh makes it for
# buildah: this machine's Go toolchain at /usr/local/go (as in the golang
# images), a static busybox for RUN's /bin/sh, and the CA bundle (the module
# proxy may sit behind a proxy whose CA only this machine trusts). It needs
# no base image, so the agent's build (the longest: it compiles) starts at
# once, while debootstrap runs.
if ! $DOCKER image inspect "$goimage" >/dev/null 2>&1; then
  g=$work/goimage
  mkdir -p "$g/usr/local" "$g/bin" "$g/etc/ssl/certs" "$g/root" "$g/go" "$g/tmp"
  chmod 1777 "$g/tmp"
  cp -al "$(go env GOROOT)" "$g/usr/local/go" 2>/dev/null || cp -a "$(go env GOROOT)" "$g/usr/local/go"
  cp "$(command -v busybox)" "$g/bin/busybox"
  for a in $(busybox --list); do [ -e "$g/bin/$a" ] || ln -s busybox "$g/bin/$a"; done
  cp /etc/ssl/certs/ca-certificates.crt "$g/etc/ssl/certs/"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$g/etc/passwd"
  tar -C "$g" -c . | $DOCKER import --change 'ENV PATH=/usr/local/go/bin:/go/bin:/bin' \
    --change 'ENV GOPATH=/go' --change 'ENV HOME=/root' - "$goimage" >/dev/null
  rm -rf "$g"
  echo "compose-test: made $goimage ($(elapsed))"
fi
./run.sh build agent >"$work/build-agent.log" 2>&1 &
agent_build=$!

if ! $DOCKER image inspect "$base" >/dev/null 2>&1; then
  if [ ! -f "$cache/rootfs/etc/debian_version" ]; then
    echo "compose-test: debootstrap --variant=minbase bookworm (kept in $cache/rootfs)"
    rm -rf "$cache/rootfs" "$cache/rootfs.tmp"
    mkdir -p "$cache"
    debootstrap --variant=minbase bookworm "$cache/rootfs.tmp" http://deb.debian.org/debian >"$work/debootstrap.log" 2>&1 ||
      { tail -n 20 "$work/debootstrap.log" >&2; rm -rf "$cache/rootfs.tmp"; fail "debootstrap"; }
    mv "$cache/rootfs.tmp" "$cache/rootfs"
  fi
  tar -C "$cache/rootfs" -c . | $DOCKER import - "$base" >/dev/null
  echo "compose-test: imported $base ($(elapsed))"
fi
./run.sh build postgres app
wait "$agent_build" || { cat "$work/build-agent.log" >&2; agent_build=; fail "building the agent image"; }
agent_build=
echo "compose-test: built the agent image ($(elapsed))"

# capture_cmd VARIANT: the command run.sh runs once the networks exist. Two
# captures: the internet network's bridge, where the hub's traffic crosses
# (what the internet sees), and the app's own packets on any interface of
# the host (its veth: the plaintext it sends, the capture's proof that it
# finds the marker where it is). Container-to-container frames do not
# show on a bridge device, so the app's are caught on its veth.
# --immediate-mode: packets still in a ring block when tcpdump is stopped
# would be lost (a buffer timeout of a second, longer than the app's tail).
capture_cmd() {
  echo "tcpdump -i sl-internet --immediate-mode -s 0 -U -w $work/$1-internet.pcap >$work/$1-internet.log 2>&1 & echo \$! >$work/$1-internet.pid;
        tcpdump -i any --immediate-mode -s 0 -U -w $work/$1-app.pcap host 10.210.10.10 >$work/$1-app.log 2>&1 & echo \$! >$work/$1-app.pid;
        for f in $work/$1-internet.log $work/$1-app.log; do
          for _ in \$(seq 1 50); do grep -q listening \$f && break; sleep 0.1; done
        done"
}

probe_js='const net=require("net");const [h,p,ms]=process.argv.slice(1);
const s=net.connect({host:h,port:+p});
setTimeout(()=>{console.log("timeout");process.exit(0)},+ms);
s.on("connect",()=>{console.log("connected");process.exit(0)});
s.on("error",e=>{console.log(e.code);process.exit(0)});'

# probe NETWORK HOST PORT: what a connect from a container on NETWORK sees.
probe() {
  $DOCKER run --rm --label org.sluice.example=docker-compose --network "$1" "$SLUICE_APP_IMAGE" node -e "$probe_js" "$2" "$3" 3000
}
SLUICE_APP_IMAGE=sluice-example/app

check_isolation() {
  local pg hub_ip got
  pg=$($DOCKER inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' bank_corp-postgres)
  [ -n "$pg" ] || fail "no address for bank_corp-postgres"
  declare -A want=(
    [sluice-example_bank_corp]=connected
    [sluice-example_analysis_corp]=timeout
    [sluice-example_internet]=timeout
  )
  if [ "$1" = transparent ]; then want[container:analysis_corp-app-net]=timeout; fi
  local net
  declare -A pids
  for net in "${!want[@]}"; do
    probe "$net" "$pg" 5432 >"$work/probe.${net//[:\/]/_}" 2>&1 &
    pids[$net]=$!
  done
  for net in "${!want[@]}"; do
    wait "${pids[$net]}" || true
    got=$(tr -d '\n' <"$work/probe.${net//[:\/]/_}")
    [ "$got" = "${want[$net]}" ] || fail "$1: connect to PostgreSQL's container $pg:5432 from $net: $got, want ${want[$net]}"
    echo "compose-test: $1: PostgreSQL's container $pg:5432 from $net: $got"
  done
  # The hub's port is the only one the example's containers publish.
  got=$($DOCKER ps --filter name=sluice-example --filter name=bank_corp- --filter name=analysis_corp- \
    --format '{{.Names}} {{.Ports}}' | grep -- '->' || true)
  [ "$(echo "$got" | wc -l)" = 1 ] && [[ $got == "sluice-example-hub "* ]] ||
    fail "$1: published ports other than the hub's: $got"
  echo "compose-test: $1: the only published port: $got"
}

check_capture() {
  local v=$1 sessions leaked seen packets direct
  packets=$(tcpdump -nr "$work/$v-internet.pcap" 'tcp port 4443 and tcp[tcpflags] & tcp-push != 0' 2>/dev/null | wc -l)
  sessions=$(grep -a -o SLD2 "$work/$v-internet.pcap" | wc -l)
  # Direct channels (agent to agent, the hub only coordinated them): TLS
  # application data records (type 23, version 3.3) on other ports.
  direct=$(tcpdump -nr "$work/$v-internet.pcap" 'tcp and not port 4443 and tcp[tcpflags] & tcp-push != 0 and tcp[((tcp[12] & 0xf0) >> 2):2] = 0x1703' 2>/dev/null | wc -l)
  leaked=$(grep -a -c -F "$SLUICE_MARKER" "$work/$v-internet.pcap" || true)
  seen=$(grep -a -c -F "$SLUICE_MARKER" "$work/$v-app.pcap" || true)
  echo "compose-test: $v: internet bridge: $packets packets with data to or from the hub, $sessions data session preambles, $direct TLS records of direct channels; marker seen $leaked times; the app's packets: marker seen $seen times"
  [ "$seen" -gt 0 ] || fail "$v: the capture of the app's packets lacks the marker it sent in the clear: the captures prove nothing"
  [ "$packets" -gt 10 ] && { [ "$sessions" -ge 2 ] || [ "$direct" -gt 2 ]; } || fail "$v: the capture on the internet bridge lacks the portal's sessions"
  [ "$leaked" = 0 ] || fail "$v: the rows' marker crossed the internet network in plaintext"
}

check_output() {
  local v=$1 out=$work/$1.out name
  for name in Alice Bob Carol; do
    grep -qF "app: row {\"name\":\"$name\",\"note\":\"$name $SLUICE_MARKER\"}" "$out" || fail "$v: the app did not print $name's row"
  done
  grep -qx 'app: The example run was successful' "$out" || fail "$v: the app did not succeed"
  echo "compose-test: $v: the app printed the three rows and \"The example run was successful\""
}

for variant in explicit transparent; do
  SLUICE_SKIP_BUILD=1 SLUICE_BEFORE_START="$(capture_cmd "$variant")" ./run.sh "$variant" 2>&1 | tee "$work/$variant.out"
  [ "${PIPESTATUS[0]}" = 0 ] || fail "$variant: run.sh failed"
  stop_captures
  check_output "$variant"
  check_capture "$variant"
  check_isolation "$variant"
  echo "compose-test: $variant passed ($(elapsed))"
done
echo "compose-test: PASS ($(elapsed))"
