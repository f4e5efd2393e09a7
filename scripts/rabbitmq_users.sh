#!/usr/bin/env bash
# Creates the per-service RabbitMQ users of deploy/rabbitmq/definitions.json on the LOCAL
# broker, with the same permissions: `make up` and `make test` run on the least-privilege
# setup that docker compose and Kubernetes use. Only those users and their permissions are
# imported (`rabbitmqctl import_definitions` of that subset, through stdin so no file holds
# the hashes; each rabbitmqctl call starts an Erlang VM, so one import rather than three calls
# per user); nothing else on the broker changes. Topic permissions say which event types
# (routing keys on the events exchange) each service may publish. Idempotent: existing users
# get their password, tags and permissions set again. The import is asynchronous, so the script then
# waits until `list_permissions` and `list_topic_permissions` show every user.
# Passwords: RABBITMQ_<USER>_PASSWORD from the environment, else the ones generated for this
# installation into var/secrets/broker.env (git-ignored, mode 600; made on the first run, then
# set again on every run, so a broker set up with other passwords gets these).
# Usage: scripts/rabbitmq_users.sh               apply
#        scripts/rabbitmq_users.sh --print-env   QMS_<SVC>_AMQP_URL lines for the local services
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
USERS_PY="$ROOT/deploy/rabbitmq/users.py"
VHOST=/
WAIT_SECONDS="${QMS_INFRA_WAIT:-60}"
PYTHON=$(command -v python3 || true)
if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; fi
say() { printf '[rabbitmq-users] %s\n' "$*"; }
die() { say "ERROR: $*" >&2; exit 1; }
[ -n "$PYTHON" ] || die "python3 is needed"

if [ "${1:-}" = "--print-env" ]; then
  exec "$PYTHON" "$USERS_PY" env
fi

out=$("$PYTHON" "$USERS_PY" local | rabbitmqctl -q import_definitions 2>&1) \
  || die "could not import the service users into the local broker: $out"

deadline=$((SECONDS + WAIT_SECONDS))
listings() {
  rabbitmqctl -q list_permissions -p "$VHOST" --no-table-headers 2>/dev/null
  echo "--- topic permissions"
  rabbitmqctl -q list_topic_permissions -p "$VHOST" --no-table-headers 2>/dev/null
}
until listings | "$PYTHON" "$USERS_PY" check 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || die "the service users did not appear within ${WAIT_SECONDS}s"
  sleep 1
done
say "per-service users and permissions set on the local broker (deploy/rabbitmq/definitions.json)"
