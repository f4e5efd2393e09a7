"""The RabbitMQ users and permissions of deploy/rabbitmq/definitions.json, for every place they go.

definitions.json is the one source: docker compose loads it at broker boot (after `render`
gave the users their password hashes), `scripts/rabbitmq_users.sh` imports the same users and
permissions into the local broker (`local`, `check`), and the tests hold the Kubernetes
Topology Operator objects to it.

A user's password comes from `RABBITMQ_<USER>_PASSWORD` (`qms-intake` ->
`RABBITMQ_QMS_INTAKE_PASSWORD`) in the environment first. Then, for docker compose, from
`.env` (compose requires them; `.env.example` documents development values); for the local
broker (`make up`, `make test`, `make bench`), from the passwords generated for this
installation in `var/secrets/broker.env` (git-ignored, mode 600; `local` makes them on first
use): the local broker never accepts a password written in the repository.

Usage (standard library only, so it runs in a bare python image):
  users.py local                     the service users and their permissions, password hashes
                                     included (generating missing passwords into
                                     var/secrets/broker.env), as definitions JSON on stdout for
                                     `rabbitmqctl import_definitions` (administrators left out:
                                     the local broker has its own; nothing else is touched)
  users.py check                     exit 0 once `rabbitmqctl list_permissions` and
                                     `list_topic_permissions` (on stdin, in that order,
                                     separated by TOPIC_LISTING) show every service user
                                     with its permissions
  users.py render DEFINITIONS OUT    the whole definitions with password hashes (compose)
  users.py env [--host H] [--port P] QMS_<SVC>_AMQP_URL=... lines for the local services and
                                     the console (QMS_CONSOLE_AMQP_URL)
"""

import argparse
import base64
import fcntl
import hashlib
import json
import os
import secrets
import sys
from pathlib import Path
from urllib.parse import quote

HERE = Path(__file__).resolve().parent
ROOT = HERE.parents[1]
DEFINITIONS = HERE / "definitions.json"
SERVICES = ("intake", "quality", "capa", "reporting", "notify")
BROKER_CLIENTS = (*SERVICES, "console")  # the console: read-only, for its live pages
SECRETS = ROOT / "var" / "secrets" / "broker.env"  # this installation's local broker passwords


def load(path: Path = DEFINITIONS) -> dict:
    return json.loads(Path(path).read_text())


def password_variable(user: str) -> str:
    return "RABBITMQ_" + user.upper().replace("-", "_") + "_PASSWORD"


def read_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines (docker compose's .env syntax, without interpolation)."""
    values: dict[str, str] = {}
    if not path.is_file():
        return values
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#") or "=" not in line:
            continue
        key, value = line.split("=", 1)
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "\"'":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def password_of(user: str, *, local: bool) -> str:
    """The user's password from the environment, else (`local`: the local broker) this
    installation's generated one in var/secrets/broker.env, else (compose) .env."""
    name = password_variable(user)
    sources = [dict(os.environ),
               installation_passwords() if local else read_env_file(ROOT / ".env")]
    for source in sources:
        if source.get(name):
            return source[name]
    if local:
        raise SystemExit(f"{name} is not set and {SECRETS} has none: `make up` (scripts/"
                         f"rabbitmq_users.sh) generates the local broker's passwords")
    raise SystemExit(f"{name} is not set (see .env.example)")


def installation_passwords(create_for: tuple[str, ...] = ()) -> dict[str, str]:
    """The local broker's passwords generated for this installation (var/secrets/broker.env),
    after generating one for each user of `create_for` that has none yet (random, URL-safe;
    the file readable by its owner only). Under a lock: concurrent first runs agree."""
    if not create_for:
        return read_env_file(SECRETS)
    SECRETS.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    with open(SECRETS.with_name(".broker.lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        values = read_env_file(SECRETS)
        missing = [password_variable(u) for u in create_for if not values.get(password_variable(u))]
        if missing:
            values |= {name: secrets.token_urlsafe(24) for name in missing}
            tmp = SECRETS.with_name(SECRETS.name + ".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as out:
                out.write("# The local broker's service users, generated for this installation"
                          " by deploy/rabbitmq/users.py.\n# An environment variable of the "
                          "same name overrides one; delete the file and run `make up` for new"
                          " ones.\n" + "".join(f"{k}={v}\n" for k, v in sorted(values.items())))
            os.chmod(tmp, 0o600)
            tmp.replace(SECRETS)
        return values


def rabbit_hash(password: str, salt: bytes | None = None) -> str:
    """RabbitMQ's rabbit_password_hashing_sha256: base64(salt + sha256(salt + password))."""
    salt = salt if salt is not None else secrets.token_bytes(4)
    return base64.b64encode(salt + hashlib.sha256(salt + password.encode()).digest()).decode()


def is_admin(user: dict) -> bool:
    tags = user.get("tags") or []
    tags = tags.split(",") if isinstance(tags, str) else tags
    return "administrator" in tags


def service_permissions(definitions: dict) -> list[dict]:
    """The permissions of every user but the administrators (the local broker has its own)."""
    admins = {u["name"] for u in definitions["users"] if is_admin(u)}
    return [p for p in definitions["permissions"] if p["user"] not in admins]


def local_subset(definitions: dict) -> dict:
    """The service users (hashed; this installation's passwords) and their permissions (on
    queues and exchanges, and on the event types they may publish), nothing else."""
    permissions = service_permissions(definitions)
    names = {p["user"] for p in permissions}
    installation_passwords(create_for=tuple(sorted(names)))
    users = [u | {"password_hash": rabbit_hash(password_of(u["name"], local=True)),
                  "hashing_algorithm": "rabbit_password_hashing_sha256"}
             for u in definitions["users"] if u["name"] in names]
    topics = [t for t in definitions.get("topic_permissions", []) if t["user"] in names]
    return {"users": users, "permissions": permissions, "topic_permissions": topics}


TOPIC_LISTING = "--- topic permissions"  # separates the two listings `check` reads


def missing_permissions(definitions: dict, listing: str) -> list[str]:
    """The service users whose permissions `rabbitmqctl list_permissions` (then, after
    TOPIC_LISTING, `list_topic_permissions`) does not show."""
    plain, _, topic = listing.partition(TOPIC_LISTING)
    rows = {tuple(line.split("\t")) for line in plain.splitlines()}
    topic_rows = {tuple(line.split("\t")) for line in topic.splitlines()}
    names = {p["user"] for p in service_permissions(definitions)}
    missing = [p["user"] for p in service_permissions(definitions)
               if (p["user"], p["configure"], p["write"], p["read"]) not in rows]
    return missing + [f"{t['user']} (topics)" for t in definitions.get("topic_permissions", [])
                      if t["user"] in names
                      and (t["user"], t["exchange"], t["write"], t["read"]) not in topic_rows]


def render(definitions: dict) -> dict:
    """The definitions with every user's password hash filled in from the environment."""
    out = json.loads(json.dumps(definitions))
    for user in out["users"]:
        user["password_hash"] = rabbit_hash(password_of(user["name"], local=False))
        user["hashing_algorithm"] = "rabbit_password_hashing_sha256"
    return out


def amqp_urls(host: str, port: int, vhost: str = "/") -> dict[str, str]:
    """Each service's (and the console's) own broker URL (they read QMS_<SVC>_AMQP_URL)."""
    path = "" if vhost == "/" else quote(vhost, safe="")  # like the kit's default URL
    return {f"QMS_{svc.upper()}_AMQP_URL":
            f"amqp://qms-{svc}:{quote(password_of(f'qms-{svc}', local=True), safe='')}"
            f"@{host}:{port}/{path}" for svc in BROKER_CLIENTS}


def write_private(out: Path, document: dict) -> None:
    """Write atomically, readable by its owner only (it holds password hashes)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    tmp.write_text(json.dumps(document, indent=2))
    os.chmod(tmp, 0o600)
    if os.getuid() == 0 and os.environ.get("RABBITMQ_DEFINITIONS_OWNER"):
        uid, _, gid = os.environ["RABBITMQ_DEFINITIONS_OWNER"].partition(":")
        os.chown(tmp, int(uid), int(gid or uid))  # the broker's user must read it
    tmp.replace(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("local")
    sub.add_parser("check")
    p_render = sub.add_parser("render")
    p_render.add_argument("definitions")
    p_render.add_argument("out")
    p_env = sub.add_parser("env")
    p_env.add_argument("--host", default="127.0.0.1")
    p_env.add_argument("--port", type=int, default=5672)
    args = parser.parse_args(argv)

    if args.command == "local":
        json.dump(local_subset(load()), sys.stdout)
    elif args.command == "check":
        missing = missing_permissions(load(), sys.stdin.read())
        if missing:
            print("not (yet) on the broker: " + ", ".join(missing), file=sys.stderr)
            return 1
    elif args.command == "render":
        write_private(Path(args.out), render(load(Path(args.definitions))))
        print(f"rendered {args.out}", file=sys.stderr)
    else:
        for key, url in amqp_urls(args.host, args.port).items():
            print(f"{key}={url}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
