#!/usr/bin/env bash
# Starts and stops a Docker engine for machines that have none running (CI, a
# test machine): `dockerd.sh start` starts Debian's dockerd in the background
# unless one already answers, and remembers what it found on the host;
# `dockerd.sh stop` stops only a dockerd this script started and then undoes
# what dockerd did to the host:
#   - the nftables tables its iptables rules live in (ip filter / ip nat, and
#     ip6 ones), deleted only if they did not exist before it started;
#   - net.ipv4.ip_forward (dockerd sets it to 1), and the bridge-nf-call
#     sysctls (dockerd turns them on, loading br_netfilter if it is a
#     module), put back to their values before;
#   - br_netfilter, unloaded if it was not loaded before (when it is a module);
#   - docker0, which dockerd leaves behind.
# State lives in $SLUICE_DOCKERD_STATE (default /run/sluice-dockerd).
set -euo pipefail

state=${SLUICE_DOCKERD_STATE:-/run/sluice-dockerd}
sock=/var/run/docker.sock
docker=${DOCKER:-/usr/bin/docker}

answers() { "$docker" -H "unix://$sock" version >/dev/null 2>&1; }

sysctls=(net/ipv4/ip_forward net/bridge/bridge-nf-call-iptables net/bridge/bridge-nf-call-ip6tables net/bridge/bridge-nf-call-arptables)

start() {
  if answers; then
    echo "dockerd.sh: a Docker engine already answers on $sock; using it"
    return 0
  fi
  mkdir -p "$state"
  nft list tables > "$state/tables.before" 2>/dev/null || : > "$state/tables.before"
  : > "$state/sysctls.before"
  for s in "${sysctls[@]}"; do
    [ -f "/proc/sys/$s" ] && echo "$s $(cat "/proc/sys/$s")" >> "$state/sysctls.before"
  done
  if [ -f /proc/modules ] && grep -q '^br_netfilter ' /proc/modules; then
    echo loaded > "$state/br_netfilter.before"
  else
    echo absent > "$state/br_netfilter.before"
  fi
  ip link show docker0 >/dev/null 2>&1 && touch "$state/docker0.before"
  # setsid: dockerd and its containerd outlive this shell but not stop.
  setsid /usr/sbin/dockerd --pidfile "$state/dockerd.pid" >"$state/dockerd.log" 2>&1 < /dev/null &
  echo $! > "$state/dockerd.started"
  for _ in $(seq 1 120); do
    if answers; then
      echo "dockerd.sh: started dockerd (pid $(cat "$state/dockerd.started"), log $state/dockerd.log)"
      return 0
    fi
    if ! kill -0 "$(cat "$state/dockerd.started")" 2>/dev/null; then
      echo "dockerd.sh: dockerd exited; its log:" >&2
      tail -n 30 "$state/dockerd.log" >&2
      exit 1
    fi
    sleep 0.5
  done
  echo "dockerd.sh: dockerd did not answer within 60 s; its log: $state/dockerd.log" >&2
  exit 1
}

stop() {
  if [ ! -f "$state/dockerd.started" ]; then
    echo "dockerd.sh: no dockerd started by this script; nothing to stop"
    return 0
  fi
  pid=$(cat "$state/dockerd.started")
  if kill -0 "$pid" 2>/dev/null; then
    kill -TERM "$pid"
    for _ in $(seq 1 60); do kill -0 "$pid" 2>/dev/null || break; sleep 0.5; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "dockerd.sh: dockerd (pid $pid) still running after 30 s; killing it" >&2
      kill -KILL "$pid" 2>/dev/null || true
    fi
  fi
  # dockerd's own containerd (pidfile under /var/run/docker/containerd) ends with it;
  # make sure no shim of ours is left.
  cpid=$(cat /var/run/docker/containerd/containerd.pid 2>/dev/null || true)
  if [ -n "$cpid" ] && kill -0 "$cpid" 2>/dev/null; then kill -TERM "$cpid" 2>/dev/null || true; fi
  undo
  rm -rf "$state"
  echo "dockerd.sh: stopped dockerd (pid $pid) and undid its changes to the host"
}

undo() {
  # nftables tables that appeared while dockerd ran (its iptables-nft rules).
  nft list tables 2>/dev/null | while read -r _ family name; do
    if ! grep -qx "table $family $name" "$state/tables.before"; then
      nft delete table "$family" "$name" && echo "dockerd.sh: deleted nftables table $family $name"
    fi
  done
  while read -r s v; do
    if [ -f "/proc/sys/$s" ] && [ "$(cat "/proc/sys/$s")" != "$v" ]; then
      echo "$v" > "/proc/sys/$s" && echo "dockerd.sh: restored $s = $v"
    fi
  done < "$state/sysctls.before"
  if [ "$(cat "$state/br_netfilter.before")" = absent ] && [ -f /proc/modules ] && grep -q '^br_netfilter ' /proc/modules; then
    modprobe -r br_netfilter 2>/dev/null && echo "dockerd.sh: unloaded br_netfilter"
  fi
  if [ ! -f "$state/docker0.before" ] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0 && echo "dockerd.sh: deleted docker0"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
