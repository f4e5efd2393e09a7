#!/usr/bin/env bash
# Installs and starts what the services need on a machine without Docker:
# RabbitMQ from Debian's packages and FerretDB v1.24.2 (SQLite storage) built
# from its Go module. Idempotent: what is installed or running is left alone.
# Usage: scripts/infra.sh install|start|stop|ferretdb|rabbitmq-config (what the broker we start listens on)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VAR="$ROOT/var"
RUN="$VAR/run"
FERRET_VERSION=v1.24.2
CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/qms"
# The project's patches to FerretDB (deploy/ferretdb/*.patch, each says why in its header: the
# SQLite handler uses its _id index, a document's fields in linear time, stored documents
# decoded more cheaply). The cached binary is named by the patches' hash, so a build made
# without them (or with an older version of them) is never reused.
FERRET_PATCHES=("$ROOT"/deploy/ferretdb/*.patch)
FERRET_PATCH_KEY=$(cat "${FERRET_PATCHES[@]}" | sha256sum | cut -c1-12)
FERRET_BIN="$CACHE/ferretdb-$FERRET_VERSION-qms-$FERRET_PATCH_KEY"
KUSTOMIZE_VERSION=v5.8.0
KUSTOMIZE_BIN="$CACHE/kustomize-$KUSTOMIZE_VERSION"  # the tests look for it here
MONGO_PORT="${QMS_MONGO_PORT:-27017}"
FERRET_DEBUG_PORT="${QMS_FERRET_DEBUG_PORT:-8088}"
AMQP_PORT=5672
MANAGEMENT_PORT=15672
PROMETHEUS_PORT=15692
# The broker we start keeps its data and logs in the project, like FerretDB: a clean clone
# (CI) gets a clean broker, not the queues earlier runs left in /var/lib/rabbitmq.
RABBIT_DIR="$VAR/rabbitmq"
export RABBITMQ_MNESIA_BASE="$RABBIT_DIR/mnesia" RABBITMQ_LOG_BASE="$RABBIT_DIR/log"
# Every listener of the broker we start binds to QMS_BIND_ADDRESS, loopback unless you mean
# otherwise (0.0.0.0: every interface): AMQP, the management UI, the Prometheus endpoint (it has
# no authentication) and, on loopback, the Erlang distribution port and epmd too (whoever
# reaches those with the cookie runs code on the node). FerretDB always listens on loopback.
BIND_ADDRESS="${QMS_BIND_ADDRESS:-127.0.0.1}"
WAIT_SECONDS="${QMS_INFRA_WAIT:-180}"

say() { printf '[infra] %s\n' "$*"; }
die() { printf '[infra] ERROR: %s\n' "$*" >&2; exit 1; }

# Who holds a TCP port on loopback (empty when free).
port_holder() {
  ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*users:(("\([^"]*\)",pid=\([0-9]*\).*/\1 (pid \2)/p' | head -n1
}
port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

need_root_or_sudo() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@";
  else die "'$*' needs root: run as root or install sudo"; fi
}

install_rabbitmq() {
  if command -v rabbitmq-server >/dev/null 2>&1 || [ -x /usr/sbin/rabbitmq-server ]; then return; fi
  say "installing rabbitmq-server from Debian's packages"
  need_root_or_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive need_root_or_sudo apt-get install -y -qq rabbitmq-server >/dev/null
  # Debian starts the broker from systemd where it can; we manage it ourselves.
}

install_promtool() {
  # promtool checks and unit-tests the Prometheus alert rules in `make test`.
  if command -v promtool >/dev/null 2>&1; then return; fi
  say "installing promtool (Debian's prometheus package)"
  need_root_or_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive need_root_or_sudo apt-get install -y -qq --no-install-recommends prometheus >/dev/null
  # The package also starts a Prometheus server under systemd; we only wanted promtool, and
  # docker compose wants port 9090.
  if [ -d /run/systemd/system ]; then
    need_root_or_sudo systemctl disable --now prometheus >/dev/null 2>&1 || true
  fi
}

install_chromium() {
  # The console's tests drive Debian's Chromium with Playwright (its own browser download
  # cannot work here): `make test` needs /usr/bin/chromium, and a Chinese font so that the
  # screenshots of the Chinese pages show characters, not boxes. The same font sets the
  # Chinese of reporting's PDF documents; poppler-utils (pdftotext, pdftoppm) lets the tests
  # read those PDFs and render their pages.
  if [ -x /usr/bin/chromium ] && [ -d /usr/share/fonts/truetype/wqy ] \
    && [ -x /usr/bin/pdftotext ] && [ -x /usr/bin/pdftoppm ]; then return; fi
  say "installing chromium, a Chinese font and poppler-utils (Debian's packages, for the console's browser tests and the PDF documents)"
  need_root_or_sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive need_root_or_sudo apt-get install -y -qq chromium \
    fonts-wqy-microhei poppler-utils >/dev/null
}

install_ferretdb() {
  if [ -x "$FERRET_BIN" ]; then return; fi
  command -v go >/dev/null || die "Go is needed to build FerretDB (apt-get install golang or see go.dev)"
  say "building FerretDB $FERRET_VERSION from its Go module with the project's patches (once; cached in $FERRET_BIN)"
  local src dir
  src=$(go mod download -json "github.com/FerretDB/FerretDB@$FERRET_VERSION" | sed -n 's/.*"Dir": "\(.*\)".*/\1/p')
  [ -d "$src" ] || die "go mod download gave no source folder for FerretDB"
  dir=$(mktemp -d)
  cp -r "$src/." "$dir/" && chmod -R u+w "$dir"
  # The module lacks build/version/version.txt (git-ignored upstream); without it
  # the binary panics at start.
  echo "$FERRET_VERSION" > "$dir/build/version/version.txt"
  local p
  for p in "${FERRET_PATCHES[@]}"; do
    say "applying $(basename "$p")"
    (cd "$dir" && git apply -p1 "$p") || die "FerretDB patch $p does not apply"
  done
  mkdir -p "$CACHE"
  (cd "$dir" && go build -o "$FERRET_BIN.tmp" ./cmd/ferretdb) || die "FerretDB build failed"
  mv "$FERRET_BIN.tmp" "$FERRET_BIN"
  rm -rf "$dir"
}

install_kustomize() {
  # `make test` builds the Kubernetes manifests (deploy/k8s) with it, as kubectl apply -k would.
  if [ -x "$KUSTOMIZE_BIN" ]; then return; fi
  say "building kustomize $KUSTOMIZE_VERSION from its Go module (once; cached in $KUSTOMIZE_BIN)"
  local gobin; gobin=$(mktemp -d)
  GOBIN="$gobin" go install "sigs.k8s.io/kustomize/kustomize/v5@$KUSTOMIZE_VERSION" \
    || die "kustomize build failed"
  mkdir -p "$CACHE" && mv "$gobin/kustomize" "$KUSTOMIZE_BIN" && rm -rf "$gobin"
}

rabbit_running() { rabbitmqctl -q status >/dev/null 2>&1; }

is_loopback() { case "$1" in 127.*|::1|localhost) return 0 ;; *) return 1 ;; esac; }

# Where the Erlang distribution port and epmd listen: nowhere but loopback while the broker's
# listeners are there. rabbitmqctl reaches the node as rabbit@<host name>, so it must be the
# loopback address the host name resolves to (127.0.0.1 here, 127.0.1.1 on a stock Debian;
# epmd always listens on 127.0.0.1 too). Empty: every interface, Erlang's default.
dist_address() {
  is_loopback "$BIND_ADDRESS" || return 0
  local addr; addr=$(getent ahostsv4 "$(hostname -s)" 2>/dev/null | awk 'NR == 1 {print $1}')
  if is_loopback "$addr"; then echo "$addr"; return; fi
  say "WARNING: the host name $(hostname -s) resolves to ${addr:-nothing}, not to loopback:" \
      "epmd (4369) and the Erlang distribution port (25672) stay open on every interface;" \
      "map the host name to 127.0.1.1 in /etc/hosts to close them" >&2
}

# The broker's listeners (rabbitmq.conf) and the environment it starts with: printed by
# `scripts/infra.sh rabbitmq-config` and exported before the broker starts.
rabbitmq_conf() {
  cat <<CONF
# Written by scripts/infra.sh before it starts the broker: set QMS_BIND_ADDRESS, not this file.
listeners.tcp.1 = $BIND_ADDRESS:$AMQP_PORT
management.tcp.ip = $BIND_ADDRESS
management.tcp.port = $MANAGEMENT_PORT
prometheus.tcp.ip = $BIND_ADDRESS
prometheus.tcp.port = $PROMETHEUS_PORT
CONF
}
rabbitmq_env() {
  local dist; dist=$(dist_address)
  echo "RABBITMQ_CONFIG_FILE=$RABBIT_DIR/rabbitmq.conf"
  [ -n "$dist" ] || return 0
  echo "ERL_EPMD_ADDRESS=$dist"
  echo "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS=-kernel inet_dist_use_interface {${dist//./,}}"
  # rabbitmqctl listens for the node's answer while it runs (ports 35672-35682): there too.
  echo "RABBITMQ_CTL_ERL_ARGS=-kernel inet_dist_use_interface {${dist//./,}}"
}

# Warn about any listener of the broker's ports beyond loopback (e.g. an epmd another program
# started before with its defaults: `make down` ends it).
check_listeners() {
  is_loopback "$BIND_ADDRESS" || return 0
  local port addr
  for port in "$AMQP_PORT" "$MANAGEMENT_PORT" "$PROMETHEUS_PORT" \
      "${RABBITMQ_DIST_PORT:-$((AMQP_PORT + 20000))}" "${ERL_EPMD_PORT:-4369}"; do
    for addr in $(ss -Hltn "sport = :$port" 2>/dev/null | awk '{print $4}'); do
      case "$addr" in 127.*|"[::1]"*) ;;
        *) say "WARNING: port $port listens on $addr, beyond loopback" >&2 ;; esac
    done
  done
}

start_rabbitmq() {
  if rabbit_running; then
    # Perhaps started by systemd after apt-get install: make sure of the plugins we use
    # (management API, Prometheus endpoint); enabling an enabled plugin changes nothing.
    say "RabbitMQ already running"
    # A broker with a memory or disk alarm blocks every publisher: say so now, not after
    # an hour of timeouts.
    timeout 60 rabbitmq-diagnostics -q check_local_alarms >/dev/null 2>&1 \
      || die "the running RabbitMQ reports a resource alarm (memory or disk) and blocks publishers: $(timeout 30 rabbitmq-diagnostics -q alarms 2>&1 | tail -n1)"
    rabbitmq-plugins -q enable rabbitmq_management rabbitmq_prometheus >/dev/null \
      || die "could not enable the RabbitMQ management and Prometheus plugins"
    return
  fi
  local holder; holder=$(port_holder $AMQP_PORT)
  [ -z "$holder" ] || die "port $AMQP_PORT (AMQP) is taken by $holder, which is not a RabbitMQ we can manage"
  rabbitmq-plugins enable --offline rabbitmq_management rabbitmq_prometheus >/dev/null
  # Debian's scripts run the broker as the `rabbitmq` user: it must own its folder.
  mkdir -p "$RABBITMQ_MNESIA_BASE" "$RABBITMQ_LOG_BASE"
  need_root_or_sudo chown -R rabbitmq:rabbitmq "$RABBIT_DIR"
  need_root_or_sudo su rabbitmq -s /bin/sh -c "test -w '$RABBITMQ_MNESIA_BASE'" 2>/dev/null \
    || die "the rabbitmq user cannot write $RABBITMQ_MNESIA_BASE (a parent folder closed to other users?)"
  rabbitmq_conf | need_root_or_sudo tee "$RABBIT_DIR/rabbitmq.conf" >/dev/null
  say "starting RabbitMQ on $BIND_ADDRESS (data, logs and rabbitmq.conf under var/rabbitmq)"
  # Every quorum queue keeps files open: at the shell's usual 1,024 descriptors a day of
  # tests (each declaring its own queues) starved the broker until it accepted no
  # connection at all. Give it what the system allows, up to 65,536.
  # Debian's wrapper starts it through `su rabbitmq`, which resets the limit: set it there.
  local hard; hard=$(ulimit -Hn)
  [ "$hard" = unlimited ] && hard=65536
  local files=$(( hard < 65536 ? hard : 65536 ))
  if [ "$(id -u)" = 0 ] && [ -x /usr/lib/rabbitmq/bin/rabbitmq-server ]; then
    (cd /var/lib/rabbitmq && su rabbitmq -s /bin/sh -c \
      "ulimit -n $files 2>/dev/null; exec /usr/lib/rabbitmq/bin/rabbitmq-server -detached") \
      >/dev/null 2>&1 || true
  else
    ulimit -n "$files" 2>/dev/null || true
    rabbitmq-server -detached >/dev/null 2>&1 || true
  fi
  # `-detached` returns before the Erlang node is reachable, and await_startup
  # fails at once on an unreachable node: ask again until the deadline.
  local deadline=$((SECONDS + WAIT_SECONDS))
  until rabbitmqctl -q await_startup --timeout 10 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || die "RabbitMQ did not start within ${WAIT_SECONDS}s (see var/rabbitmq/log/)"
    sleep 1
  done
  mkdir -p "$RUN" && touch "$RUN/rabbitmq.ours"
  check_listeners
}

# SQLite's page cache per connection (QMS_FERRETDB_CACHE_MB, 32) and memory-mapped reads
# (QMS_FERRETDB_MMAP_MB, 256): with SQLite's defaults (2 MB, none) every read past the first
# 2 MB of a database was a system call and a copy, and the soak's databases grow to tens of
# MB in 10 minutes. Memory is taken as pages are read, not up front.
ferret_sqlite_url() {
  local cache_kb=$(( ${QMS_FERRETDB_CACHE_MB:-32} * 1024 ))
  local mmap=$(( ${QMS_FERRETDB_MMAP_MB:-256} * 1048576 ))
  echo "file:$VAR/ferretdb/data/?_pragma=cache_size(-$cache_kb)&_pragma=mmap_size($mmap)"
}

start_ferretdb() {
  if [ -f "$RUN/ferretdb.pid" ] && kill -0 "$(cat "$RUN/ferretdb.pid")" 2>/dev/null; then
    local pid running; pid=$(cat "$RUN/ferretdb.pid")
    running=$(readlink "/proc/$pid/exe" 2>/dev/null || true)
    local gogc; gogc=$(tr '\0' '\n' < "/proc/$pid/environ" 2>/dev/null | sed -n 's/^GOGC=//p')
    local url; url=$(tr '\0' '\n' < "/proc/$pid/cmdline" 2>/dev/null | sed -n 's/^--sqlite-url=//p')
    if [ "$running" = "$FERRET_BIN" ] && [ "$gogc" = "${QMS_FERRETDB_GOGC:-400}" ] \
        && [ "$url" = "$(ferret_sqlite_url)" ]; then
      say "FerretDB already running"; return
    fi
    # Built before the current patches (deploy/ferretdb), or with other settings: restart it.
    say "FerretDB runs an older build or settings ($running, GOGC=${gogc:-default}); restarting it"
    kill "$pid"
    local deadline=$((SECONDS + WAIT_SECONDS))
    while kill -0 "$pid" 2>/dev/null; do
      [ $SECONDS -lt $deadline ] || die "FerretDB (pid $pid) did not stop within ${WAIT_SECONDS}s"
      sleep 0.2
    done
    rm -f "$RUN/ferretdb.pid"
  fi
  local holder; holder=$(port_holder "$MONGO_PORT")
  if [ -n "$holder" ]; then
    die "port $MONGO_PORT (MongoDB wire) is taken by $holder; stop it or set QMS_MONGO_PORT"
  fi
  mkdir -p "$VAR/ferretdb/data" "$VAR/ferretdb/state" "$RUN" "$VAR/log"
  say "starting FerretDB $FERRET_VERSION on 127.0.0.1:$MONGO_PORT (SQLite under var/ferretdb)"
  # GOGC: FerretDB allocates a lot per command (JSON documents in, BSON out); Go's default
  # (100) spent about a third of its CPU collecting garbage. 400 (measured here: 1,500 inserts,
  # updates and finds took 3.8 s of CPU instead of 5.9 s) costs about 12 MB more memory.
  GOGC="${QMS_FERRETDB_GOGC:-400}" FERRETDB_TELEMETRY=disable nohup "$FERRET_BIN" --handler=sqlite \
    --sqlite-url="$(ferret_sqlite_url)" --state-dir="$VAR/ferretdb/state" \
    --listen-addr="127.0.0.1:$MONGO_PORT" --debug-addr="127.0.0.1:$FERRET_DEBUG_PORT" \
    --telemetry=disable --log-level=warn >"$VAR/log/ferretdb.log" 2>&1 &
  echo $! > "$RUN/ferretdb.pid"
  local deadline=$((SECONDS + WAIT_SECONDS))
  until port_open "$MONGO_PORT"; do
    kill -0 "$(cat "$RUN/ferretdb.pid")" 2>/dev/null || die "FerretDB exited; see var/log/ferretdb.log"
    [ $SECONDS -lt $deadline ] || die "FerretDB did not listen on $MONGO_PORT within ${WAIT_SECONDS}s"
    sleep 0.2
  done
}

stop_all() {
  if [ -f "$RUN/ferretdb.pid" ]; then
    local pid; pid=$(cat "$RUN/ferretdb.pid")
    if kill -0 "$pid" 2>/dev/null; then say "stopping FerretDB"; kill "$pid"; fi
    rm -f "$RUN/ferretdb.pid"
  fi
  if [ -f "$RUN/rabbitmq.ours" ]; then
    say "stopping RabbitMQ"
    # A stuck node must not hang `make down` (and CI): give it a minute, then end it.
    # Given the pid file, `stop` waits until the process has ended.
    local pidfile pid; pidfile=$(ls "$RABBITMQ_MNESIA_BASE"/*.pid 2>/dev/null | head -n1 || true)
    pid=$(cat "$pidfile" 2>/dev/null || true)
    timeout 60 rabbitmqctl -q stop $pidfile >/dev/null 2>&1 || true
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
      say "RabbitMQ did not stop within 60s; killing it (pid $pid)"; kill -9 "$pid" || true
    fi
    # rabbitmq-server started the Erlang port mapper too; it exits once no node uses it.
    epmd -kill >/dev/null 2>&1 || true
    rm -f "$RUN/rabbitmq.ours"
  fi
}

case "${1:-}" in
  install) install_rabbitmq; install_promtool; install_chromium; install_ferretdb; install_kustomize ;;
  start) install_rabbitmq; install_promtool; install_chromium; install_ferretdb; install_kustomize
         # Before the first rabbitmqctl: it starts epmd when none runs, which must then listen
         # on loopback too; the broker starts with this environment.
         while IFS= read -r line; do export "${line%%=*}=${line#*=}"; done < <(rabbitmq_env)
         start_rabbitmq
         "$ROOT/scripts/rabbitmq_users.sh"  # the per-service least-privilege users
         start_ferretdb
         say "RabbitMQ amqp://127.0.0.1:$AMQP_PORT (management http://127.0.0.1:$MANAGEMENT_PORT; listening on $BIND_ADDRESS), FerretDB mongodb://127.0.0.1:$MONGO_PORT" ;;
  stop) stop_all ;;
  # FerretDB alone, as `start` runs it, on its data (the fault tests start it after kill -9).
  ferretdb) install_ferretdb; start_ferretdb ;;
  rabbitmq-config) rabbitmq_conf; echo "# environment:"; rabbitmq_env ;;
  *) die "usage: $0 install|start|stop|ferretdb|rabbitmq-config" ;;
esac
