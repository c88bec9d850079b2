#!/usr/bin/env bash
# Starts and stops a Docker engine for machines that have none running (CI, a
# test machine): `dockerd.sh start` starts Debian's dockerd in the background
# unless one already answers, and remembers what it found on the host;
# `dockerd.sh stop` stops only a dockerd this script started and then undoes
# what dockerd did to the host:
#   - its iptables rules and chains (DOCKER*, docker0's, the example's
#     bridges'), and the FORWARD policy (it sets DROP) back to what it was;
#     the nftables tables they live in (ip filter, ip nat, with iptables-nft)
#     deleted if they did not exist before and are empty now (another engine,
#     podman say, may have rules there: those stay);
#   - net.ipv4.ip_forward (dockerd sets it to 1), unless other FORWARD rules
#     remain, and the bridge-nf-call sysctls (dockerd turns them on, loading
#     br_netfilter if it is a module), put back to their values before;
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
  if grep -qx 'table ip filter' "$state/tables.before"; then
    iptables -t filter -S FORWARD 2>/dev/null | awk '$1 == "-P" {print $3}' > "$state/forward-policy.before"
  fi
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
  [ -e /run/docker ] && touch "$state/rundocker.before"
  [ -e /run/containerd ] && touch "$state/runcontainerd.before"
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

# Docker's own chains and the rules that lead to them or name its default
# bridge or the example's bridges (sl-*). Other rules in the same tables (a
# podman's netavark chains, say) are left alone.
ours='-j DOCKER|DOCKER-|docker0|[[:space:]]sl-[a-z]+'

undo_iptables() {
  command -v iptables >/dev/null 2>&1 || return 0
  local table rule chain
  for table in nat filter; do
    iptables -t "$table" -S 2>/dev/null | grep -E '^-A (PREROUTING|INPUT|FORWARD|OUTPUT|POSTROUTING) ' | grep -E -- "$ours" |
      while read -r rule; do
        # shellcheck disable=SC2086 # the rule's words are iptables arguments
        eval "iptables -t $table -D ${rule#-A }" && echo "dockerd.sh: removed iptables -t $table $rule"
      done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$table" -F "$chain"
    done
    for chain in $(iptables -t "$table" -S 2>/dev/null | awk '$1 == "-N" && $2 ~ /^DOCKER/ {print $2}'); do
      iptables -t "$table" -X "$chain" && echo "dockerd.sh: removed iptables -t $table chain $chain"
    done
  done
  # dockerd sets the FORWARD policy to DROP.
  local policy=ACCEPT
  [ -s "$state/forward-policy.before" ] && policy=$(cat "$state/forward-policy.before")
  if iptables -t filter -S FORWARD 2>/dev/null | grep -q '^-P FORWARD ' &&
     ! iptables -t filter -S FORWARD | grep -qx -- "-P FORWARD $policy"; then
    iptables -t filter -P FORWARD "$policy" && echo "dockerd.sh: restored the FORWARD policy $policy"
  fi
  # Tables that did not exist before and hold nothing now go.
  for table in nat filter; do
    if ! grep -qx "table ip $table" "$state/tables.before" &&
       [ -z "$(iptables -t "$table" -S 2>/dev/null | grep -v '^-P [A-Z]* ACCEPT$')" ]; then
      nft delete table ip "$table" 2>/dev/null && echo "dockerd.sh: deleted the empty nftables table ip $table"
    fi
  done
}

undo() {
  undo_iptables
  # ip_forward back to what it was, unless something else forwards now
  # (rules left in FORWARD: another container engine).
  local others
  others=$(iptables -t filter -S FORWARD 2>/dev/null | grep -c '^-A' || true)
  while read -r s v; do
    [ -f "/proc/sys/$s" ] && [ "$(cat "/proc/sys/$s")" != "$v" ] || continue
    if [ "$s" = net/ipv4/ip_forward ] && [ "${others:-0}" -gt 0 ]; then
      echo "dockerd.sh: left $s = $(cat "/proc/sys/$s") (was $v): $others other FORWARD rules remain (another container engine)"
      continue
    fi
    echo "$v" > "/proc/sys/$s" && echo "dockerd.sh: restored $s = $v"
  done < "$state/sysctls.before"
  if [ "$(cat "$state/br_netfilter.before")" = absent ] && [ -f /proc/modules ] && grep -q '^br_netfilter ' /proc/modules; then
    modprobe -r br_netfilter 2>/dev/null && echo "dockerd.sh: unloaded br_netfilter"
  fi
  if [ ! -f "$state/docker0.before" ] && ip link show docker0 >/dev/null 2>&1; then
    ip link delete docker0 && echo "dockerd.sh: deleted docker0"
  fi
  # dockerd leaves /run/docker behind, with its host namespace mounted at
  # /run/docker/netns/default (and, while it runs, files of containers
  # gone that are no namespaces any more).
  if [ ! -f "$state/rundocker.before" ] && [ -d /run/docker ]; then
    local f
    for f in /run/docker/netns/*; do
      mountpoint -q "$f" 2>/dev/null && umount "$f"
    done
    rm -rf /run/docker && echo "dockerd.sh: removed /run/docker"
  fi
  # Its containerd's shim sockets.
  if [ ! -f "$state/runcontainerd.before" ] && [ -d /run/containerd ]; then
    rm -rf /run/containerd && echo "dockerd.sh: removed /run/containerd"
  fi
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  *) echo "usage: $0 start|stop" >&2; exit 2 ;;
esac
