#!/usr/bin/env bash
# Builds deploy/docker/Dockerfile here, without a Docker engine and without
# pulling from a registry (docs/container.md): with buildah (or podman
# build), from a local Go build image made from this machine's Go toolchain.
#
#   deploy/docker/build.sh [IMAGE]          (default localhost/sluice-agent:dev)
#   deploy/docker/build.sh --clean [IMAGE]  removes IMAGE, the Go build images
#                                           and the build's caches (make clean-images)
#
# Environment:
#   GO_IMAGE   the build stage's base, already in local storage (default
#              localhost/sluice-go:<the Go version of $GOROOT>, made here if
#              it does not exist)
#   GOROOT     the toolchain copied into it (default: `go env GOROOT`)
#   VERSION    the version stamped in the binaries (default: git describe)
#   REVISION   the revision stamped in them (default: git rev-parse HEAD)
#
# The Go build image is made once and kept (a scratch image with the
# toolchain, a static busybox for RUN's /bin/sh, and the host's CA bundle for
# the module proxy): `make clean-images` removes it. The module and build
# caches live in buildah's RUN --mount=type=cache directories, so a rebuild
# compiles only what changed. RUN steps run with --isolation chroot: no OCI
# runtime and no cgroup setup (crun refuses hybrid cgroup hosts), the host's
# network for the module proxy. Needs root.
set -euo pipefail
cd "$(dirname "$0")/../.."

clean=false
if [ "${1:-}" = --clean ]; then
  clean=true
  shift
fi
image=${1:-localhost/sluice-agent:dev}

if command -v buildah >/dev/null 2>&1; then
  bud=(buildah bud)
  exists() { buildah inspect --type image "$1" >/dev/null 2>&1; }
elif command -v podman >/dev/null 2>&1; then
  bud=(podman build)
  exists() { podman image exists "$1"; }
else
  echo "build.sh: needs buildah or podman (apt-get install buildah), or build with docker (docs/container.md)" >&2
  exit 1
fi

# The caches of the Dockerfile's RUN --mount=type=cache,id=... (buildah
# keeps them under /var/tmp/buildah-cache as root).
caches=(/var/tmp/buildah-cache/sluice-go-mod /var/tmp/buildah-cache/sluice-go-build)

if $clean; then
  label=label=org.opencontainers.image.title=sluice-go
  if command -v podman >/dev/null 2>&1; then
    go_images=$(podman images --noheading --filter "$label" --format '{{.Repository}}:{{.Tag}}')
    # and the agent images a rebuild under the same tag left untagged
    old=$(podman images --noheading --filter label=org.opencontainers.image.title=sluice-agent --filter dangling=true --format '{{.ID}}')
    podman rmi --force --ignore "$image" $go_images $old >/dev/null
  else
    go_images=$(buildah images --noheading --filter "$label" --format '{{.Name}}:{{.Tag}}')
    for i in "$image" $go_images; do buildah rmi --force "$i" >/dev/null 2>&1 || true; done
  fi
  rm -rf "${caches[@]}"
  echo "build.sh: removed $image $(echo $go_images) ${caches[*]}"
  exit 0
fi

goroot=${GOROOT:-$(go env GOROOT)}
gover=$("$goroot/bin/go" env GOVERSION)
go_image=${GO_IMAGE:-localhost/sluice-go:${gover#go}}

if [ -n "${VERSION+x}" ]; then
  version=$VERSION
else
  version=$(git describe --tags --always --dirty 2>/dev/null || echo "(devel)")
fi
if [ -n "${REVISION+x}" ]; then
  revision=$REVISION
else
  revision=$(git rev-parse HEAD 2>/dev/null || true)
fi

# make_go_image builds $go_image: the toolchain at /usr/local/go, as in the
# golang images, on an empty base.
make_go_image() {
  command -v buildah >/dev/null 2>&1 || { echo "build.sh: making $go_image needs buildah" >&2; exit 1; }
  local bb ca ctr mnt
  bb=$(command -v busybox) || { echo "build.sh: making $go_image needs a static busybox (apt-get install busybox-static)" >&2; exit 1; }
  ca=/etc/ssl/certs/ca-certificates.crt
  [ -f "$ca" ] || { echo "build.sh: making $go_image needs $ca (apt-get install ca-certificates)" >&2; exit 1; }
  echo "build.sh: making the Go build image $go_image from $goroot ($gover)" >&2
  ctr=$(buildah from --quiet scratch)
  trap 'buildah rm "$ctr" >/dev/null 2>&1 || true' EXIT
  mnt=$(buildah mount "$ctr")
  mkdir -p "$mnt/bin" "$mnt/usr/local" "$mnt/etc/ssl/certs" "$mnt/root" "$mnt/go" "$mnt/tmp"
  chmod 1777 "$mnt/tmp"
  cp -a "$goroot" "$mnt/usr/local/go"
  cp "$bb" "$mnt/bin/busybox"
  chroot "$mnt" /bin/busybox --install -s /bin
  cp "$ca" "$mnt/etc/ssl/certs/ca-certificates.crt"
  echo 'root:x:0:0:root:/root:/bin/sh' >"$mnt/etc/passwd"
  buildah umount "$ctr" >/dev/null
  buildah config --env PATH=/usr/local/go/bin:/go/bin:/bin --env GOPATH=/go --env HOME=/root \
    --workingdir /go --label org.opencontainers.image.title=sluice-go "$ctr"
  buildah commit --quiet --rm "$ctr" "$go_image" >/dev/null
  trap - EXIT
}

if ! exists "$go_image"; then
  if [ -n "${GO_IMAGE:-}" ]; then
    echo "build.sh: GO_IMAGE $GO_IMAGE is not in local storage and nothing is pulled: pull it first (podman pull $GO_IMAGE), or unset GO_IMAGE to make one from this machine's Go" >&2
    exit 1
  fi
  make_go_image
fi

"${bud[@]}" --isolation chroot --format docker --pull=never -f deploy/docker/Dockerfile \
  --build-arg GO_IMAGE="$go_image" --build-arg VERSION="$version" --build-arg REVISION="$revision" \
  -t "$image" .
