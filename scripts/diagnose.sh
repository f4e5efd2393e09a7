#!/usr/bin/env bash
# What to look at when the tests failed: the machine, the broker, the database, and the
# last lines of their logs. Printed by .ci/run on failure, so a CI log says why.
cd "$(dirname "$0")/.."
section() { printf '\n===== %s =====\n' "$*"; }
section machine; uptime; free -m; df -h . | tail -n1
section "RabbitMQ"
timeout 20 rabbitmq-diagnostics -q alarms 2>&1 | tail -n3
printf 'queues: '; timeout 20 rabbitmqctl -q list_queues name 2>/dev/null | wc -l
for log in var/rabbitmq/log/*.log; do [ -f "$log" ] && { echo "--- $log"; tail -n 30 "$log"; }; done
section FerretDB; tail -n 20 var/log/ferretdb.log 2>/dev/null
section "e2e service logs (last lines with an error)"
grep -h -i -m3 "error\|traceback" reports/e2e-logs/*.log 2>/dev/null | tail -n 20
true
