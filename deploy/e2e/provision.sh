#!/usr/bin/env bash
# Provisions what the compose end-to-end test (deploy/compose_e2e_test.go)
# needs on a Debian bookworm machine, as root, with no image registry:
#   1. a Docker engine (Debian's docker.io), started when none answers, and
#      Debian's python3-httpx for the seed Python client;
#   2. Compose v2 (Debian's docker-compose is v1), built from the Go module
#      proxy into ~/.docker/cli-plugins;
#   3. local stand-ins for the public images the deployment pulls, tagged
#      waywo-e2e/*: a bookworm minbase (debootstrap) for the runtime stages,
#      the same with gcc and this machine's Go toolchain for the build stage,
#      nats-server (built from the version in go.mod) and Ollama (the CPU
#      build the tests use).
# Every step is skipped when its result exists, so a second run takes
# seconds. It prints how long each step took.
set -euo pipefail
cd "$(dirname "$0")/../.."

CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/waywo-embed"
COMPOSE_VERSION=v2.40.3
OLLAMA_VERSION=v0.10.1 # internal/ollamatest.Version
STANDIN=3              # bump to rebuild the stand-in images
mkdir -p "$CACHE"

step() { STEP="$1"; STEP_START=$(date +%s); echo "== e2e provision: $1"; }
done_step() { echo "== e2e provision: $STEP took $(($(date +%s) - STEP_START)) s"; }

step "docker engine"
if ! docker info >/dev/null 2>&1; then
  if ! command -v dockerd >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq docker.io >/dev/null
  fi
  nohup dockerd >"$CACHE/dockerd.log" 2>&1 &
  for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    sleep 1
  done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start:"; tail -20 "$CACHE/dockerd.log"; exit 1; }
fi
done_step

step "python3-httpx (the seed Python client's library)"
if ! /usr/bin/python3 -c 'import httpx' 2>/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-httpx >/dev/null
fi
done_step

step "compose $COMPOSE_VERSION"
plugin="$HOME/.docker/cli-plugins/docker-compose"
if ! docker compose version 2>/dev/null | grep -q "${COMPOSE_VERSION#v}"; then
  # `go install …@version` refuses: compose's go.mod has exclude directives.
  dir="$CACHE/compose-$COMPOSE_VERSION"
  mkdir -p "$dir" "$(dirname "$plugin")"
  (cd "$dir" && { [ -f go.mod ] || go mod init x >/dev/null 2>&1; } &&
    GOFLAGS=-mod=mod go get "github.com/docker/compose/v2/cmd@$COMPOSE_VERSION" &&
    GOFLAGS=-mod=mod go build -ldflags "-X github.com/docker/compose/v2/internal.Version=$COMPOSE_VERSION" \
      -o "$plugin.tmp" github.com/docker/compose/v2/cmd)
  mv "$plugin.tmp" "$plugin"
fi
docker compose version
done_step

have() { docker image inspect "$1" >/dev/null 2>&1; }

# build_image TAG DIR: build DIR (a Dockerfile and what it copies) as TAG,
# then remove DIR.
build_image() {
  docker build -q -t "$1" "$2" >/dev/null
  rm -rf "$2"
}

step "base image waywo-e2e/bookworm:$STANDIN"
if ! have "waywo-e2e/bookworm:$STANDIN"; then
  command -v debootstrap >/dev/null || { apt-get update -qq; DEBIAN_FRONTEND=noninteractive apt-get install -y -qq debootstrap >/dev/null; }
  rootfs="$CACHE/rootfs-bookworm"
  rm -rf "$rootfs"
  # wget: the nats healthcheck; sqlite3: the test's "backend" writing
  # waywo.db; libstdc++6, libgomp1: Ollama's CPU runner.
  debootstrap --variant=minbase --include=ca-certificates,wget,sqlite3,libstdc++6,libgomp1 \
    bookworm "$rootfs" http://deb.debian.org/debian >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log"; exit 1; }
  rm -rf "$rootfs"/var/cache/apt/archives/*.deb
  # Trust what this machine trusts: its extra CAs (a proxy's, on these
  # machines) reach the module proxy and Debian's mirror from containers.
  if compgen -G "/usr/local/share/ca-certificates/*.crt" >/dev/null; then
    cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/"
    chroot "$rootfs" update-ca-certificates >/dev/null
  fi
  tar -C "$rootfs" -c . | docker import - "waywo-e2e/bookworm:$STANDIN" >/dev/null
  rm -rf "$rootfs"
fi
done_step

step "build image waywo-e2e/golang:$STANDIN"
if ! have "waywo-e2e/golang:$STANDIN"; then
  ctx="$(mktemp -d)"
  cp -a "$(go env GOROOT)" "$ctx/go"
  cat >"$ctx/Dockerfile" <<EOF
FROM waywo-e2e/bookworm:$STANDIN
RUN apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq gcc libc6-dev >/dev/null && rm -rf /var/lib/apt/lists/*
COPY go /usr/local/go
ENV GOPATH=/go PATH=/go/bin:/usr/local/go/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin GOTOOLCHAIN=local
EOF
  build_image "waywo-e2e/golang:$STANDIN" "$ctx"
fi
done_step

step "image waywo-e2e/nats:$STANDIN"
if ! have "waywo-e2e/nats:$STANDIN"; then
  ctx="$(mktemp -d)"
  CGO_ENABLED=0 go build -o "$ctx/nats-server" github.com/nats-io/nats-server/v2
  cat >"$ctx/Dockerfile" <<EOF
FROM waywo-e2e/bookworm:$STANDIN
COPY nats-server /usr/local/bin/nats-server
EXPOSE 4222 8222
ENTRYPOINT ["/usr/local/bin/nats-server"]
EOF
  build_image "waywo-e2e/nats:$STANDIN" "$ctx"
fi
done_step

step "image waywo-e2e/ollama:$STANDIN"
if ! have "waywo-e2e/ollama:$STANDIN"; then
  bin="${WAYWO_OLLAMA_BIN:-$CACHE/ollama-$OLLAMA_VERSION/ollama}"
  if [ ! -x "$bin" ]; then
    # The same build, directory and lock as internal/ollamatest.Binary, so
    # tests starting meanwhile wait for it rather than build it twice.
    dir="$(dirname "$bin")"
    mkdir -p "$dir"
    (cd "$dir" && flock .lock sh -c "[ -x ollama ] || GOBIN='$dir' CGO_ENABLED=1 GOFLAGS=-mod=mod go install github.com/ollama/ollama@$OLLAMA_VERSION")
  fi
  ctx="$(mktemp -d)"
  cp "$bin" "$ctx/ollama"
  cat >"$ctx/Dockerfile" <<EOF
FROM waywo-e2e/bookworm:$STANDIN
COPY ollama /usr/bin/ollama
ENV OLLAMA_HOST=0.0.0.0:11434
EXPOSE 11434
ENTRYPOINT ["/usr/bin/ollama"]
CMD ["serve"]
EOF
  build_image "waywo-e2e/ollama:$STANDIN" "$ctx"
fi
done_step
echo "== e2e provision: ready (waywo-e2e/*:$STANDIN)"
