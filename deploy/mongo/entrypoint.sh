#!/usr/bin/env bash
# MongoDB 7 for docker compose: a single-node replica set (the kit writes with majority
# concern; change streams and transactions need a replica set too) with authentication.
# A replica set with authentication needs a keyfile for its members; one is generated into
# the config volume at first start. The official entrypoint then creates the root user
# (MONGO_INITDB_ROOT_*; it starts its temporary init server without --replSet/--keyFile),
# and `mongo-init` (deploy/mongo/init.js) initiates the replica set and the service users.
set -euo pipefail

KEYFILE=/data/configdb/replica-set.key
if [ ! -s "$KEYFILE" ]; then
  head -c 756 /dev/urandom | base64 -w 0 > "$KEYFILE"
fi
chown mongodb:mongodb "$KEYFILE"
chmod 400 "$KEYFILE"

exec docker-entrypoint.sh mongod --replSet "${MONGO_REPLICA_SET:-rs0}" --keyFile "$KEYFILE" \
  --bind_ip_all "$@"
