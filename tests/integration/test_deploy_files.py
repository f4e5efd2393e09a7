"""The deployment files, checked without a Docker engine or a cluster: docker-compose.yml, the
Dockerfiles, the RabbitMQ definitions (loaded into the real local broker) and the Kubernetes
manifests (parsed, and built with kustomize where it is installed)."""

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import sysconfig
import uuid
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import pytest
import yaml

import shared.contracts  # noqa: F401 - registers every contract
from shared.events import registered_contracts
from shared.messaging import Topology
from tests.conftest import test_namespace
from tests.support import load_script

ROOT = Path(__file__).resolve().parents[2]
SERVICES = ("intake", "quality", "capa", "reporting", "notify")
SINGLE_ACTIVE_CONSUMER = {"reporting"}  # one replica consumes, the others stand by
PORTS = {"intake": 8001, "quality": 8002, "capa": 8003, "reporting": 8004, "notify": 8005,
         "console": 8000}
IMAGES = (*SERVICES, "console")  # the web console: an image of the same shape, no database
K8S = ROOT / "deploy" / "k8s"
SECRET_NAME = re.compile(r"PASSWORD|SECRET|TOKEN|_KEY$")
INTERPOLATION = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?])?([^}]*)\}")


def load_users_module():
    return load_script("deploy/rabbitmq/users.py", "qms_rabbitmq_users_deploy")


users = load_users_module()


def env_example() -> dict[str, str]:
    return users.read_env_file(ROOT / ".env.example")


def dev_secrets() -> dict[str, str]:
    """The documented development defaults that are secrets (non-empty)."""
    return {k: v for k, v in env_example().items() if SECRET_NAME.search(k) and v}


# --- docker compose ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def compose_text() -> str:
    return (ROOT / "docker-compose.yml").read_text()


@pytest.fixture(scope="module")
def compose(compose_text) -> dict[str, Any]:
    return yaml.safe_load(compose_text)  # YAML merge keys (`<<`) resolved like compose does


def one_shots(compose: dict) -> set[str]:
    return {name for name, svc in compose["services"].items() if svc.get("restart") == "no"}


def test_compose_runs_every_part_of_the_system(compose):
    services = compose["services"]
    for name in (*SERVICES, "rabbitmq", "mongo", "prometheus", "grafana"):
        assert name in services, f"{name} missing from docker-compose.yml"
    assert "management" in services["rabbitmq"]["image"]
    plugins = (ROOT / "deploy/rabbitmq/enabled_plugins").read_text()
    assert "rabbitmq_management" in plugins and "rabbitmq_prometheus" in plugins
    for name in SERVICES:
        build = services[name]["build"]
        assert build["context"] == "." and build["dockerfile"] == f"services/{name}/Dockerfile"


def test_every_long_running_container_has_a_healthcheck(compose):
    for name, svc in compose["services"].items():
        if name in one_shots(compose):
            continue
        check = svc.get("healthcheck") or {}
        assert check.get("test"), f"{name} has no healthcheck"
        assert not check.get("disable"), f"{name} disables its healthcheck"
    for name in IMAGES:
        test = " ".join(compose["services"][name]["healthcheck"]["test"])
        assert f"127.0.0.1:{PORTS[name]}/readyz" in test, f"{name} must be healthy when ready"


def test_every_dependency_is_waited_for_by_its_health(compose):
    services = compose["services"]
    for name, svc in services.items():
        deps = svc.get("depends_on") or {}
        assert isinstance(deps, dict), f"{name}: depends_on without conditions only orders starts"
        for dep, spec in deps.items():
            condition = spec.get("condition")
            if dep in one_shots(compose):
                assert condition == "service_completed_successfully", f"{name} -> {dep}"
            else:
                assert condition == "service_healthy", f"{name} -> {dep}"
                assert services[dep].get("healthcheck"), f"{name} waits on {dep}'s health"
    for name in SERVICES:
        deps = services[name]["depends_on"]
        assert {"rabbitmq", "mongo", "mongo-init"} <= set(deps), name
    assert "rabbitmq-definitions" in services["rabbitmq"]["depends_on"]
    assert "mongo" in services["mongo-init"]["depends_on"]
    assert "prometheus" in services["grafana"]["depends_on"]


def test_mongodb_7_runs_as_a_single_node_replica_set_with_init(compose):
    mongo, init = compose["services"]["mongo"], compose["services"]["mongo-init"]
    assert mongo["image"].startswith("mongo:7")
    entrypoint = (ROOT / "deploy/mongo/entrypoint.sh").read_text()
    assert "--replSet" in entrypoint and "--keyFile" in entrypoint
    assert "mongo-data:/data/db" in mongo["volumes"]
    assert "/opt/qms/init.js" in init["entrypoint"]
    script = (ROOT / "deploy/mongo/init.js").read_text()
    assert "rs.initiate" in script and "members: [{ _id: 0" in script  # one member
    assert "isWritablePrimary" in script  # users only once it is primary
    # Each service's user: readWrite on its own database, nothing else.
    assert re.search(r'roles = \[\{ role: "readWrite", db: `\$\{namespace\}_\$\{service\}` \}\]',
                     script)
    assert re.findall(r'"(\w+)"', script.split("SERVICES = [", 1)[1].split("]")[0]) \
        == list(SERVICES)
    for name in SERVICES:
        url = compose["services"][name]["environment"][f"QMS_{name.upper()}_MONGO_URL"]
        assert url.startswith(f"mongodb://qms-{name}:${{MONGO_QMS_{name.upper()}_PASSWORD:?")
        assert "replicaSet=rs0" in url


def test_each_service_connects_as_its_own_broker_user(compose):
    for name in SERVICES:
        env = compose["services"][name]["environment"]
        url = env[f"QMS_{name.upper()}_AMQP_URL"]
        assert url.startswith(f"amqp://qms-{name}:${{RABBITMQ_QMS_{name.upper()}_PASSWORD:?"), url
        assert "QMS_AMQP_URL" not in env and "QMS_MONGO_URL" not in env


def test_compose_console_sits_behind_oauth2_proxy_with_the_development_sign_in_off(compose):
    """People reach the console only through oauth2-proxy, which forwards their access token;
    the console connects as its read-only broker user and calls the services by name."""
    services = compose["services"]
    console, proxy = services["console"], services["oauth2-proxy"]
    assert console["build"] == {"context": ".", "dockerfile": "services/console/Dockerfile"}
    env = console["environment"]
    assert env["QMS_CONSOLE_DEV_SIGNIN"] == "false"
    assert not console.get("ports"), "the console's port is reached through the proxy only"
    assert env["QMS_CONSOLE_AMQP_URL"].startswith(
        "amqp://qms-console:${RABBITMQ_QMS_CONSOLE_PASSWORD:?")
    assert "QMS_CONSOLE_MONGO_URL" not in env and "QMS_MONGO_URL" not in env
    for name in SERVICES:
        assert env[f"QMS_CONSOLE_{name.upper()}_URL"] == f"http://{name}:{PORTS[name]}"
        assert services[name]["healthcheck"], name
    assert env["QMS_JWKS_URL"].startswith("${QMS_JWKS_URL"), "RS256 tokens: the IdP's JWKS"
    assert env["QMS_CONSOLE_SESSION_SECRET"].startswith("${QMS_CONSOLE_SESSION_SECRET:?")
    proxied = proxy["environment"]
    assert proxied["OAUTH2_PROXY_UPSTREAMS"] == f"http://console:{PORTS['console']}/"
    assert "--pass-access-token=true" in proxy["command"]
    assert proxied["OAUTH2_PROXY_PROVIDER"] == "oidc"
    for key in ("OIDC_ISSUER_URL", "CLIENT_ID", "CLIENT_SECRET", "COOKIE_SECRET"):
        assert INTERPOLATION.fullmatch(proxied[f"OAUTH2_PROXY_{key}"]), key  # from .env
    assert any(port.endswith(":4180:4180") for port in proxy["ports"])
    assert proxy["depends_on"]["console"]["condition"] == "service_healthy"
    # Every broker user of the definitions gets its password when compose renders them.
    rendered = services["rabbitmq-definitions"]["environment"]
    for user in load_definitions()["users"]:
        assert users.password_variable(user["name"]) in rendered, user["name"]


def test_named_volumes_keep_the_data_and_the_attachments(compose):
    declared = set(compose["volumes"])
    mounts = {name: svc.get("volumes") or [] for name, svc in compose["services"].items()}
    for name, mount in [("rabbitmq", "rabbitmq-data:/var/lib/rabbitmq"),
                        ("mongo", "mongo-data:/data/db"), ("mongo", "mongo-config:/data/configdb"),
                        ("intake", "attachments:/data/attachments"),
                        ("notify", "attachments:/data/attachments"),
                        ("prometheus", "prometheus-data:/prometheus"),
                        ("grafana", "grafana-data:/var/lib/grafana")]:
        assert mount in mounts[name], f"{name} should mount {mount}"
    for name, volumes in mounts.items():
        for volume in volumes:
            source = volume.split(":", 1)[0]
            if source.startswith("."):
                assert (ROOT / source).exists(), f"{name} mounts {source}, which does not exist"
            else:
                assert source in declared, f"{name}: volume {source} is not declared"
    for name in ("intake", "notify"):
        env = compose["services"][name]["environment"]
        assert env[f"QMS_{name.upper()}_ATTACHMENT_DIR"] == "/data/attachments"


def test_no_secret_in_plain_text_beyond_the_documented_development_defaults(compose,
                                                                             compose_text):
    documented = env_example()
    for var, operator, _default in INTERPOLATION.findall(compose_text):
        assert var in documented, f"${{{var}}} (docker-compose.yml) is not in .env.example"
        if SECRET_NAME.search(var):
            assert operator == ":?", f"secret {var} must be required, not defaulted inline"
    for var, value in dev_secrets().items():
        assert value not in compose_text, f"the value of {var} is written in docker-compose.yml"
    # Every secret-looking setting of a container is taken from .env, never written here.
    for name, svc in compose["services"].items():
        for key, value in (svc.get("environment") or {}).items():
            if SECRET_NAME.search(key) or key.endswith(("_AMQP_URL", "_MONGO_URL")):
                assert value == "" or INTERPOLATION.search(str(value)), f"{name}: {key}"


def test_compose_prometheus_scrapes_like_the_project_config_so_the_alert_rules_hold(compose,
                                                                                   tmp_path):
    """Compose's scrape config differs from deploy/prometheus/prometheus.yml only in hosts."""
    mine = yaml.safe_load(compose["configs"]["prometheus"]["content"])
    project = yaml.safe_load((ROOT / "deploy/prometheus/prometheus.yml").read_text())

    def jobs(config: dict) -> dict[str, tuple]:
        return {job["job_name"]: (
            job.get("metrics_path"),
            sorted((t.split(":")[1], tuple(sorted((sc.get("labels") or {}).items())))
                   for sc in job["static_configs"] for t in sc["targets"]))
            for job in config["scrape_configs"]}

    theirs = jobs(project)
    theirs.pop("ferretdb", None)  # compose runs MongoDB, which has no metrics endpoint
    assert jobs(mine) == theirs
    # The console's /metrics too, as app="console" (its HTTP metrics say service="console").
    assert ("8000", (("app", "console"),)) in theirs["qms-services"][1]
    assert any("console:8000" in sc["targets"] for job in mine["scrape_configs"]
               for sc in job["static_configs"])
    mounts = dict(v.split(":")[:2][::-1] for v in compose["services"]["prometheus"]["volumes"])
    rule_files = []
    for rule_file in mine["rule_files"]:
        folder = next(m for m in mounts if rule_file.startswith(m + "/"))
        local = ROOT / mounts[folder] / rule_file.removeprefix(folder + "/")
        assert local.exists(), f"{rule_file} is {local}, which does not exist"
        rule_files.append(str(local))
    if not shutil.which("promtool"):
        pytest.skip("promtool is not installed")
    config = tmp_path / "prometheus.yml"
    config.write_text(yaml.safe_dump(mine | {"rule_files": rule_files}))
    result = subprocess.run(["promtool", "check", "config", str(config)], check=False,
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_compose_grafana_gives_the_provisioning_what_it_expands(compose):
    grafana = compose["services"]["grafana"]
    provisioning = ROOT / "deploy/grafana/provisioning"
    wanted = {m for p in provisioning.rglob("*.y*ml")
              for m in re.findall(r"\$\{(\w+)\}", p.read_text())}
    assert wanted <= set(grafana["environment"]), wanted - set(grafana["environment"])
    assert "./deploy/grafana/provisioning:/etc/grafana/provisioning:ro" in grafana["volumes"]
    dashboards = grafana["environment"]["QMS_GRAFANA_DASHBOARDS"]
    assert any(v.startswith("./deploy/grafana/dashboards:" + dashboards)
               for v in grafana["volumes"])


def test_no_deployment_file_holds_a_development_secret_except_the_dev_overlay():
    files = [ROOT / "docker-compose.yml", ROOT / "scripts" / "rabbitmq_users.sh",
             *(ROOT / "services").glob("*/Dockerfile"),
             *(p for p in (ROOT / "deploy").rglob("*") if p.is_file()
               and (K8S / "overlays" / "dev") not in p.parents)]
    for path in files:
        text = path.read_text(errors="replace")
        for var, value in dev_secrets().items():
            assert value not in text, f"{path.relative_to(ROOT)} holds the value of {var}"


def test_env_example_documents_every_service_user():
    documented = env_example()
    for user in load_definitions()["users"]:
        assert users.password_variable(user["name"]) in documented, user["name"]
    for name in SERVICES:
        assert f"MONGO_QMS_{name.upper()}_PASSWORD" in documented


# --- images ----------------------------------------------------------------------------------

def dockerfile(name: str) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    text = (ROOT / "services" / name / "Dockerfile").read_text()
    text = re.sub(r"\\\n", " ", "\n".join(line for line in text.splitlines()
                                          if not line.lstrip().startswith("#")))
    return [(line.split(None, 1)[0].upper(), line.split(None, 1)[1] if " " in line else "")
            for line in text.splitlines() if line.strip()]


@pytest.mark.parametrize("name", IMAGES)
def test_each_service_has_a_slim_multi_stage_non_root_image_with_a_readiness_check(name):
    steps = dockerfile(name)
    stages = [args for op, args in steps if op == "FROM"]
    assert len(stages) >= 2, "multi-stage: build tools and caches stay out of the image"
    args = dict(a.split("=", 1) for op, a in steps if op == "ARG" and "=" in a)
    assert args.get("PYTHON_IMAGE", "").startswith("python:3.11-slim")
    assert all(s.startswith("${PYTHON_IMAGE}") for s in stages)
    final = steps[max(i for i, (op, _) in enumerate(steps) if op == "FROM"):]
    users_ = [a for op, a in final if op == "USER"]
    assert users_ and users_[-1].split(":")[0] not in ("0", "root"), "runs as a non-root user"
    check = [a for op, a in final if op == "HEALTHCHECK"]
    assert check and "/readyz" in check[0]
    # Exec form must be valid JSON, or Docker silently runs it through a shell instead.
    probe = json.loads(check[0].split(" CMD ", 1)[1])
    assert probe[:2] == ["python", "-c"] and "/readyz" in probe[2]
    assert [a for op, a in final if op == "CMD"] == [f'["python", "-m", "services.{name}"]']
    assert str(PORTS[name]) in " ".join(a for op, a in final if op == "EXPOSE")
    assert f"QMS_{name.upper()}_HTTP_HOST=0.0.0.0" in " ".join(a for op, a in final if op == "ENV")
    # Only what this service needs: the kit and its own package, no other service, no tests.
    copied = [src for op, a in steps if op == "COPY" and not a.startswith("--from")
              for src in a.split()[:-1]]
    assert sorted(copied) == sorted(["pyproject.toml", "requirements.lock", "shared/",
                                     "services/__init__.py", f"services/{name}/"]), copied
    # ...at the versions the tests ran on.
    assert "pip install -c requirements.lock" in " ".join(a for op, a in steps if op == "RUN")


@pytest.mark.parametrize("name", IMAGES)
def test_what_the_image_copies_is_enough_to_build_the_service(name, tmp_path):
    """The files the Dockerfile copies, alone (no other service), build the service's app."""
    for op, args in dockerfile(name):
        if op == "COPY" and not args.startswith("--from"):
            *sources, target = args.split()
            if target.startswith("/app/"):
                (source,) = sources
                destination = tmp_path / target.removeprefix("/app/")
                if (ROOT / source).is_dir():
                    shutil.copytree(ROOT / source, destination,
                                    ignore=shutil.ignore_patterns("__pycache__"))
                else:
                    destination.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy(ROOT / source, destination)
    script = (f"import services.{name}.app as app, services.{name}.settings as s; "
              f"app.create(s.Settings())")
    # -S: no site processing, so the project's editable install cannot supply what the image
    # lacks; the dependencies come from the virtualenv's site-packages on PYTHONPATH.
    path = os.pathsep.join([str(tmp_path), sysconfig.get_paths()["purelib"],
                            sysconfig.get_paths()["platlib"]])
    result = subprocess.run([sys.executable, "-S", "-c", script], cwd=tmp_path, check=False,
                            env=os.environ | {"PYTHONPATH": path},
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-3000:]


@pytest.mark.parametrize("name", IMAGES)
def test_a_service_imports_no_other_service(name):
    others = "|".join(s for s in IMAGES if s != name)
    pattern = re.compile(rf"^\s*(from|import)\s+services\.({others})\b", re.MULTILINE)
    for path in (ROOT / "services" / name).rglob("*.py"):
        assert not pattern.search(path.read_text()), f"{path} imports another service"


def test_the_image_context_holds_only_the_code():
    lines = [ln.strip() for ln in (ROOT / ".dockerignore").read_text().splitlines()
             if ln.strip() and not ln.startswith("#")]
    assert lines[0] == "*", "allow-list: everything is excluded unless named"
    assert {"!pyproject.toml", "!requirements.lock", "!shared", "!services"} <= set(lines)
    assert not [ln for ln in lines if ln.startswith(("!.env", "!var"))]


# --- RabbitMQ definitions ---------------------------------------------------------------------

def load_definitions() -> dict:
    return users.load()


def test_definitions_declare_the_exchange_the_kit_uses():
    exchange = Topology("qms", "intake").exchange
    (declared,) = load_definitions()["exchanges"]
    assert declared["name"] == exchange.name
    assert declared["type"] == "topic" and declared["durable"] and not declared["auto_delete"]
    assert declared["vhost"] in {v["name"] for v in load_definitions()["vhosts"]}
    assert all(u["password_hash"] == "" for u in load_definitions()["users"]), \
        "no password in the repository: compose renders them from .env"


@pytest.mark.parametrize("namespace", ["qms", "t1a2b3c4e2e", "plant_b"])
@pytest.mark.parametrize("name", SERVICES)
def test_each_service_user_is_allowed_its_own_queues_and_the_exchange_only(name, namespace):
    perms = {p["user"]: p for p in load_definitions()["permissions"]}[f"qms-{name}"]

    def allowed(kind: str, resource: str) -> bool:  # RabbitMQ matches like re.search
        return re.search(perms[kind], resource) is not None

    own = Topology(namespace, name)
    queue, retry, dlq = own.queue_name, own.retry.name, own.dlq.name
    exchange = own.exchange.name
    for resource in (exchange, queue, retry, dlq):
        assert allowed("configure", resource), resource   # declare its topology
    assert allowed("write", exchange) and allowed("write", "amq.default")  # publish, retry
    assert allowed("write", queue) and allowed("read", exchange)  # bind its queue
    assert allowed("read", queue)  # consume it
    for other in SERVICES:
        if other == name:
            continue
        theirs = Topology(namespace, other)
        for resource in (theirs.queue_name, theirs.retry.name, theirs.dlq.name):
            for kind in ("configure", "write", "read"):
                assert not allowed(kind, resource), f"{name} may {kind} {resource}"
    for kind in ("configure", "write", "read"):
        assert not allowed(kind, f"{namespace}.{name}-copy")
        assert not allowed(kind, "amq.topic")


@pytest.fixture(scope="module")
def local_users() -> None:
    subprocess.run([str(ROOT / "scripts" / "rabbitmq_users.sh")], check=True,
                   capture_output=True, timeout=180)


def emitted_event_types(service: str) -> set[str]:
    """The event types a service's code emits (`....emit(SomeContract(...))`)."""
    by_class = {c.__name__: t for (t, _), c in registered_contracts().items()}
    found: set[str] = set()
    for path in (ROOT / "services" / service).rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "emit" and node.args
                    and isinstance(node.args[0], ast.Call)
                    and isinstance(node.args[0].func, ast.Name)
                    and node.args[0].func.id in by_class):
                found.add(by_class[node.args[0].func.id])
    return found


def test_each_event_type_has_one_publisher_and_each_service_publishes_only_its_own():
    """Topic permissions: a service's broker user may publish only the event types it owns,
    so a compromised or buggy notify cannot, say, hand Sales a quality record."""
    write = {t["user"].removeprefix("qms-"): re.compile(t["write"])
             for t in load_definitions()["topic_permissions"] if t["exchange"] == "qms.events"}
    assert set(write) == set(SERVICES)
    for event_type, _ in registered_contracts():
        if event_type.startswith(("kit.", "unit.")):  # the tests' own contracts
            continue
        owners = [name for name, allowed in write.items() if allowed.fullmatch(event_type)]
        assert len(owners) == 1, f"{event_type} may be published by {owners or 'nobody'}"
    for name in SERVICES:
        emitted = emitted_event_types(name)
        assert name == "reporting" or emitted, f"found no emit(...) in {name}"
        assert {t for t in emitted if not write[name].fullmatch(t)} == set(), name


def test_the_users_script_gives_the_local_broker_the_same_users_and_permissions(local_users):
    out = subprocess.run(["rabbitmqctl", "-q", "list_permissions", "-p", "/",
                          "--no-table-headers"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    on_broker = {line.split("\t")[0]: tuple(line.split("\t")[1:])
                 for line in out.splitlines() if line}
    for p in load_definitions()["permissions"]:
        if p["user"] == "qms-admin":
            continue  # the local broker keeps its own administrator
        assert on_broker.get(p["user"]) == (p["configure"], p["write"], p["read"]), p["user"]
    out = subprocess.run(["rabbitmqctl", "-q", "list_topic_permissions", "-p", "/",
                          "--no-table-headers"], check=True, capture_output=True, text=True,
                         timeout=60).stdout
    topics = {tuple(line.split("\t")) for line in out.splitlines() if line}
    for t in load_definitions()["topic_permissions"]:
        assert (t["user"], t["exchange"], t["write"], t["read"]) in topics, t["user"]


@pytest.fixture
def management() -> httpx.Client:
    api = os.environ.get("QMS_RABBIT_API", "http://127.0.0.1:15672/api")
    with httpx.Client(base_url=api, auth=("guest", "guest"), timeout=30) as client:
        yield client


async def test_the_rendered_definitions_load_into_the_local_broker(management, monkeypatch):
    """What compose loads at boot, imported into a throw-away vhost with renamed users, so the
    shared broker is left as it was. Through the management API (the same importer as the
    boot-time import, without an Erlang VM per rabbitmqctl call)."""
    suffix = test_namespace(uuid.uuid4().hex[:4])
    vhost = f"{suffix}_defs"
    passwords = {u["name"]: uuid.uuid4().hex for u in load_definitions()["users"]}
    for user, password in passwords.items():
        monkeypatch.setenv(users.password_variable(user), password)
    rendered = users.render(load_definitions())  # exactly what rabbitmq-definitions writes
    rename = {u["name"]: f"{u['name']}-{suffix}" for u in rendered["users"]}
    for user in rendered["users"]:
        user["name"] = rename[user["name"]]
    for item in rendered["vhosts"]:
        item["name"] = vhost
    for section in ("permissions", "exchanges"):
        for item in rendered[section]:
            item["vhost"] = vhost
    for perm in rendered["permissions"]:
        perm["user"] = rename[perm["user"]]
    try:
        resp = management.post("/definitions", json=rendered)
        assert resp.status_code in (200, 201, 204), resp.text
        exchange = management.get(f"/exchanges/{vhost}/qms.events").json()
        assert exchange["type"] == "topic" and exchange["durable"]
        # The password hashes are in RabbitMQ's format: the user logs in with its password.
        user = f"qms-intake-{suffix}"
        connection = await aio_pika.connect(
            f"amqp://{user}:{passwords['qms-intake']}@127.0.0.1:5672/{vhost}")
        await connection.close()
        perms = management.get(f"/users/{user}/permissions").json()
        assert [p["vhost"] for p in perms] == [vhost]
    finally:
        for name in rename.values():
            management.delete(f"/users/{name}")
        management.delete(f"/vhosts/{vhost}")


# --- Kubernetes ------------------------------------------------------------------------------

def k8s_documents(folder: Path = K8S / "base") -> list[dict]:
    docs = []
    for path in sorted(folder.glob("*.yaml")):
        if path.name == "kustomization.yaml":
            continue
        docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs


def test_every_kubernetes_file_parses():
    paths = sorted(K8S.rglob("*.yaml"))
    assert paths
    for path in paths:
        for doc in yaml.safe_load_all(path.read_text()):
            assert doc is None or ("kind" in doc and "apiVersion" in doc), path


def kustomize_command() -> list[str] | None:
    """kustomize as `make test` installs it (scripts/infra.sh), else from PATH, else kubectl."""
    cache = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "qms"
    for tool in [*sorted(cache.glob("kustomize-*")), shutil.which("kustomize")]:
        if tool:
            return [str(tool), "build"]
    return ["kubectl", "kustomize"] if shutil.which("kubectl") else None


def kustomize_build(overlay: str) -> list[dict]:
    cmd = kustomize_command()
    if cmd is None:
        pytest.skip("neither kustomize nor kubectl is installed (`make test` installs "
                    "kustomize; the base is checked directly)")
    out = subprocess.run([*cmd, str(K8S / overlay)], check=True, capture_output=True,
                         text=True, timeout=120).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def check_deployments(docs: list[dict]) -> None:
    by_kind: dict[str, list[dict]] = {}
    for doc in docs:
        by_kind.setdefault(doc["kind"], []).append(doc)
    deployments = {d["metadata"]["name"]: d for d in by_kind["Deployment"]}
    assert set(deployments) == {*SERVICES, "console", "oauth2-proxy"}
    pdbs = [p["spec"]["selector"]["matchLabels"] for p in by_kind["PodDisruptionBudget"]]
    services = [s["spec"]["selector"] for s in by_kind["Service"]]
    scaled = {s["spec"]["scaleTargetRef"]["name"]: s for s in by_kind["ScaledObject"]}
    for name, dep in deployments.items():
        labels = dep["spec"]["template"]["metadata"]["labels"]
        assert dep["spec"]["replicas"] >= 2, f"{name}: at least two consumers"
        ready, live = ("/ready", "/ping") if name == "oauth2-proxy" else ("/readyz", "/healthz")
        for container in dep["spec"]["template"]["spec"]["containers"]:
            assert container["readinessProbe"]["httpGet"]["path"] == ready, name
            assert container["livenessProbe"]["httpGet"]["path"] == live, name
            requests = container["resources"]["requests"]
            assert requests.get("cpu") and requests.get("memory"), name
            assert container["securityContext"]["allowPrivilegeEscalation"] is False
        assert dep["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"] is True
        assert any(sel.items() <= labels.items() for sel in pdbs), f"{name} has no PDB"
        assert any(sel.items() <= labels.items() for sel in services), f"{name} has no Service"
        if name not in SERVICES:
            assert name not in scaled, f"{name} consumes no queue: nothing to scale on"
            continue
        if name in SINGLE_ACTIVE_CONSUMER:  # standbys add no throughput: nothing to scale
            assert name not in scaled, f"{name} has one active consumer: no KEDA scaler"
            continue
        scaler = scaled[name]["spec"]
        assert scaler["minReplicaCount"] >= 2 and scaler["maxReplicaCount"] > 2
        (trigger,) = scaler["triggers"]
        assert trigger["type"] == "rabbitmq" and trigger["metadata"]["mode"] == "QueueLength"
        assert trigger["metadata"]["queueName"] == Topology("qms", name).queue_name


def test_the_base_runs_every_service_as_probed_budgeted_autoscaled_consumers():
    check_deployments(k8s_documents())


def test_each_deployment_uses_its_own_broker_and_database_user():
    for dep in (d for d in k8s_documents() if d["kind"] == "Deployment"):
        name = dep["metadata"]["name"]
        if name not in SERVICES:
            continue  # the console: its own test below
        (container,) = dep["spec"]["template"]["spec"]["containers"]
        env = {e["name"]: e for e in container["env"]}
        assert env["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] \
            == f"qms-rabbitmq-{name}"
        assert env[f"QMS_{name.upper()}_AMQP_URL"]["value"].startswith(
            f"amqp://qms-{name}:$(RABBITMQ_PASSWORD)@")
        assert env[f"QMS_{name.upper()}_MONGO_URL"]["valueFrom"]["secretKeyRef"]["name"] \
            == f"qms-mongodb-admin-qms-{name}"
        assert list(env).index("RABBITMQ_PASSWORD") < list(env).index(
            f"QMS_{name.upper()}_AMQP_URL"), "$(VAR) expands only variables defined before it"


def env_of(deployment: dict) -> dict[str, dict]:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return {e["name"]: e for e in container["env"]}


def test_kubernetes_console_is_reached_through_oauth2_proxy_with_the_dev_sign_in_off():
    """Ingress -> oauth2-proxy -> console: the proxy forwards the person's access token, the
    console verifies it with the identity provider's JWKS (qms-config) and has no
    development sign-in; it uses its own read-only broker user and no database."""
    docs = kustomize_build("overlays/production")
    deployments = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Deployment"}
    services = {d["metadata"]["name"]: d for d in docs if d["kind"] == "Service"}
    (ingress,) = [d for d in docs if d["kind"] == "Ingress"]
    backends = {p["backend"]["service"]["name"] for rule in ingress["spec"]["rules"]
                for p in rule["http"]["paths"]}
    assert backends == {"oauth2-proxy"}, "nobody reaches the console around the proxy"
    assert ingress["spec"]["tls"], "the proxy's cookie is Secure: HTTPS"
    (proxy_container,) = deployments["oauth2-proxy"]["spec"]["template"]["spec"]["containers"]
    assert "--pass-access-token=true" in proxy_container["args"]
    proxy = env_of(deployments["oauth2-proxy"])
    assert proxy["OAUTH2_PROXY_PROVIDER"]["value"] == "oidc"
    upstream = proxy["OAUTH2_PROXY_UPSTREAMS"]["value"]
    (port,) = services["console"]["spec"]["ports"]
    assert upstream == f"http://console:{port['port']}/"
    for key in ("OAUTH2_PROXY_CLIENT_SECRET", "OAUTH2_PROXY_COOKIE_SECRET"):
        assert proxy[key]["valueFrom"]["secretKeyRef"]["name"] == "qms-oauth2-proxy", key
    configs = {d["metadata"]["name"]: d.get("data", {}) for d in docs if d["kind"] == "ConfigMap"}
    (proxy_config,) = [c for n, c in configs.items() if n.startswith("qms-oauth2-proxy")]
    assert proxy_config["OAUTH2_PROXY_OIDC_ISSUER_URL"].startswith("https://")
    assert proxy_config["OAUTH2_PROXY_REDIRECT_URL"] == \
        f"https://{ingress['spec']['rules'][0]['host']}/oauth2/callback"

    console = deployments["console"]
    env = env_of(console)
    assert env["QMS_CONSOLE_DEV_SIGNIN"]["value"] == "false"
    assert env["RABBITMQ_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "qms-rabbitmq-console"
    assert env["QMS_CONSOLE_AMQP_URL"]["value"].startswith("amqp://qms-console:$(RABBITMQ_PASSWORD)@")
    assert list(env).index("RABBITMQ_PASSWORD") < list(env).index("QMS_CONSOLE_AMQP_URL")
    assert not [k for k in env if "MONGO" in k], "the console writes no database"
    assert env["QMS_CONSOLE_SESSION_SECRET"]["valueFrom"]["secretKeyRef"]["name"] == "qms-console"
    for name in SERVICES:  # each service's HTTP port (notify's Service also has SMTP)
        (port,) = [p for p in services[name]["spec"]["ports"] if p["name"] == "http"]
        assert env[f"QMS_CONSOLE_{name.upper()}_URL"]["value"] == f"http://{name}:{port['port']}"
    (container,) = console["spec"]["template"]["spec"]["containers"]
    (from_config,) = [c["configMapRef"]["name"] for c in container["envFrom"]]
    assert configs[from_config]["QMS_JWKS_URL"].startswith("https://")
    assert configs[from_config]["QMS_JWT_AUDIENCE"]


def test_rabbitmq_and_mongodb_come_from_their_operators_replicated():
    docs = k8s_documents()
    (rabbit,) = [d for d in docs if d["kind"] == "RabbitmqCluster"]
    assert rabbit["spec"]["replicas"] == 3
    assert "default_queue_type = quorum" in rabbit["spec"]["rabbitmq"]["additionalConfig"]
    (mongo,) = [d for d in docs if d["kind"] == "MongoDBCommunity"]
    assert mongo["spec"]["type"] == "ReplicaSet" and mongo["spec"]["members"] == 3
    assert mongo["spec"]["version"].startswith("7.")
    roles = {u["name"]: u["roles"] for u in mongo["spec"]["users"]}
    assert roles == {f"qms-{s}": [{"name": "readWrite", "db": f"qms_{s}"}] for s in SERVICES}


def test_the_topology_operator_objects_match_the_definitions():
    docs = k8s_documents()
    definitions = load_definitions()
    wanted = {p["user"]: (p["vhost"], p["configure"], p["write"], p["read"])
              for p in definitions["permissions"] if p["user"] != "qms-admin"}
    got = {d["spec"]["user"]: (d["spec"]["vhost"], *(d["spec"]["permissions"][k]
                                                     for k in ("configure", "write", "read")))
           for d in docs if d["kind"] == "Permission"}
    assert got == wanted
    k8s_users = {d["metadata"]["name"] for d in docs if d["kind"] == "User"}
    assert k8s_users == set(wanted)
    topics = {(t["user"], t["vhost"], t["exchange"], t["write"], t["read"])
              for t in definitions["topic_permissions"]}
    assert topics == {(d["spec"]["user"], d["spec"]["vhost"],
                       *(d["spec"]["permissions"][k] for k in ("exchange", "write", "read")))
                      for d in docs if d["kind"] == "TopicPermission"}
    (exchange,) = [d["spec"] for d in docs if d["kind"] == "Exchange"]
    (declared,) = definitions["exchanges"]
    assert (exchange["name"], exchange["type"], exchange["durable"]) \
        == (declared["name"], declared["type"], declared["durable"])


def test_no_secret_in_the_base_or_production_and_dev_uses_the_documented_defaults():
    for folder in (K8S / "base", K8S / "overlays" / "production"):
        text = "\n".join(p.read_text() for p in folder.rglob("*.yaml"))
        assert "kind: Secret" not in text and "secretGenerator" not in text, folder
        for var, value in dev_secrets().items():
            assert value not in text, f"the value of {var} is written in {folder}"
    dev = yaml.safe_load((K8S / "overlays/dev/kustomization.yaml").read_text())
    documented = set(dev_secrets().values())
    for generator in dev["secretGenerator"]:
        for literal in generator["literals"]:
            key, value = literal.split("=", 1)
            if key == "password" or key == "secret":
                assert value in documented, f"{generator['name']}: not a documented dev default"
            if key == "host":
                assert re.fullmatch(r"amqp://qms-scaler:([^@]+)@[^/]+/", value)
                assert value.split(":")[2].split("@")[0] in documented


@pytest.mark.parametrize("overlay", ["overlays/dev", "overlays/production"])
def test_the_overlays_build_and_keep_probes_resources_and_replicas(overlay):
    docs = kustomize_build(overlay)
    check_deployments(docs)
    assert all(d["metadata"].get("namespace") == "qms" for d in docs if d["kind"] != "Namespace")
    secrets = [d for d in docs if d["kind"] == "Secret"]
    if overlay.endswith("production"):
        assert not secrets, "production Secrets come from the secret store"
    else:
        names = {s["metadata"]["name"] for s in secrets}
        refs = {e["valueFrom"]["secretKeyRef"]["name"]
                for d in docs if d["kind"] == "Deployment"
                for c in d["spec"]["template"]["spec"]["containers"] for e in c["env"]
                if "valueFrom" in e and "secretKeyRef" in e["valueFrom"]}
        operator_written = {f"qms-mongodb-admin-qms-{s}" for s in SERVICES}
        assert refs - operator_written <= names, "every referenced Secret exists in dev"



# --- Monitoring on Kubernetes (Prometheus Operator) --------------------------------------------
def load_prometheus_rule_script():
    return load_script("scripts/prometheus_rule.py", "qms_prometheus_rule")


def test_kubernetes_alerts_are_the_rules_promtool_tests():
    """One source of alert rules: the PrometheusRule is alerts.yml, regenerated."""
    script = load_prometheus_rule_script()
    assert script.OUT.read_text() == script.render(), \
        "run .venv/bin/python scripts/prometheus_rule.py"
    (rule,) = [d for d in k8s_documents(K8S / "monitoring") if d["kind"] == "PrometheusRule"]
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    assert rule["spec"]["groups"] == alerts["groups"]


def test_kubernetes_scrapes_give_the_job_names_the_rules_use():
    """The rules say `up{job="qms-services"}` and `job="rabbitmq"`; the monitors relabel to
    them (FerretDB is a development stand-in: Kubernetes runs MongoDB)."""
    rules = (ROOT / "deploy" / "prometheus" / "alerts.yml").read_text()
    wanted = set(re.findall(r'job="([^"]+)"', rules)) - {"ferretdb"}
    monitors = [d for d in k8s_documents(K8S / "monitoring")
                if d["kind"] in ("PodMonitor", "ServiceMonitor")]
    endpoints = [e for m in monitors
                 for e in m["spec"].get("podMetricsEndpoints", m["spec"].get("endpoints", []))]
    jobs = {r["replacement"] for e in endpoints for r in e.get("relabelings", [])
            if r.get("targetLabel") == "job"}
    assert wanted == jobs
    (services,) = [m for m in monitors if m["kind"] == "PodMonitor"]
    scraped = set()
    for deployment in (d for d in k8s_documents() if d["kind"] == "Deployment"):
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        ports = {p["name"] for c in deployment["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        if selects(services["spec"]["selector"], labels):
            assert "http" in ports, deployment["metadata"]["name"]
            scraped.add(deployment["metadata"]["name"])
    assert scraped == {*SERVICES, "console"}, "the services' and the console's /metrics"


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """A Kubernetes label selector (matchLabels and In/NotIn/Exists expressions)."""
    if not selector.get("matchLabels", {}).items() <= labels.items():
        return False
    for expr in selector.get("matchExpressions", []):
        key, op, values = expr["key"], expr["operator"], expr.get("values", [])
        present = key in labels
        ok = {"In": present and labels[key] in values,
              "NotIn": not present or labels[key] not in values,
              "Exists": present, "DoesNotExist": not present}[op]
        if not ok:
            return False
    return True


def test_the_monitoring_builds_into_the_systems_namespace():
    docs = kustomize_build("monitoring")
    assert sorted(d["kind"] for d in docs) == ["PodMonitor", "PrometheusRule", "ServiceMonitor"]
    assert all(d["metadata"]["namespace"] == "qms" for d in docs)
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "qms" for d in docs)
