"""What the RabbitMQ `make up` starts listens on (scripts/infra.sh rabbitmq-config prints the
rabbitmq.conf and environment it starts the broker with): loopback only, unless
QMS_BIND_ADDRESS says otherwise; and FerretDB on loopback always."""

import os
import re
import socket
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
INFRA = ROOT / "scripts" / "infra.sh"


def rabbitmq_config(**env: str) -> tuple[dict[str, str], dict[str, str], str]:
    """(rabbitmq.conf settings, environment, stderr) of `infra.sh rabbitmq-config`."""
    clean = {k: v for k, v in os.environ.items() if k != "QMS_BIND_ADDRESS"}
    done = subprocess.run([str(INFRA), "rabbitmq-config"], env=clean | env, capture_output=True,
                          text=True, timeout=60, check=True)
    conf_text, _, env_text = done.stdout.partition("# environment:\n")
    settings = dict(line.split(" = ", 1) for line in conf_text.splitlines()
                    if line and not line.startswith("#"))
    environment = dict(line.split("=", 1) for line in env_text.splitlines() if "=" in line)
    return settings, environment, done.stderr


def host_name_is_loopback() -> bool:
    try:
        return socket.gethostbyname(socket.gethostname().split(".")[0]).startswith("127.")
    except OSError:
        return False


def test_every_listener_of_the_broker_make_up_starts_is_on_loopback():
    settings, environment, warnings = rabbitmq_config()
    assert settings == {"listeners.tcp.1": "127.0.0.1:5672",
                        "management.tcp.ip": "127.0.0.1", "management.tcp.port": "15672",
                        "prometheus.tcp.ip": "127.0.0.1", "prometheus.tcp.port": "15692"}
    assert environment["RABBITMQ_CONFIG_FILE"] == str(ROOT / "var" / "rabbitmq" / "rabbitmq.conf")
    if not host_name_is_loopback():  # rabbitmqctl could not reach a node on loopback: say so
        assert "stay open on every interface" in warnings
        return
    # epmd and the Erlang distribution port (25672), and rabbitmqctl's own listener.
    address = environment["ERL_EPMD_ADDRESS"]
    assert address.startswith("127.")
    interface = "-kernel inet_dist_use_interface {" + address.replace(".", ",") + "}"
    assert environment["RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS"] == interface
    assert environment["RABBITMQ_CTL_ERL_ARGS"] == interface


def test_qms_bind_address_opens_the_broker_to_the_network_for_those_who_mean_it():
    settings, environment, _ = rabbitmq_config(QMS_BIND_ADDRESS="0.0.0.0")
    assert settings["listeners.tcp.1"] == "0.0.0.0:5672"
    assert settings["management.tcp.ip"] == settings["prometheus.tcp.ip"] == "0.0.0.0"
    assert "ERL_EPMD_ADDRESS" not in environment  # Erlang's default: every interface


def test_ferretdb_and_its_debug_endpoint_listen_on_loopback_only():
    text = INFRA.read_text()
    assert re.search(r'--listen-addr="127\.0\.0\.1:\$MONGO_PORT"', text)
    assert re.search(r'--debug-addr="127\.0\.0\.1:\$FERRET_DEBUG_PORT"', text)
    assert "--listen-unix" not in text and "--listen-tls" not in text
