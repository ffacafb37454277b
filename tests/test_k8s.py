"""deploy/k8s: the kustomize base and example overlay, held to the code they deploy.

Each kustomization is checked file by file (resources exist, patches and generators name
objects that exist), then built with `kubectl kustomize` and the objects it renders are checked:
required fields, every environment variable known to modelrouter.config, ports and probe paths
that the app serves, labels and selectors that match, the shutdown arithmetic, the security
settings, and the alert rules identical to deploy/prometheus/alerts.yml.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from functools import cache
from pathlib import Path
from typing import Any

import pytest
import yaml

from modelrouter.config import load_settings, variables
from modelrouter.web import create_app

ROOT = Path(__file__).resolve().parent.parent
K8S = ROOT / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
SECRET_TEMPLATE = K8S / "secret.example.yaml"
KINDS = {
    "Deployment",
    "Service",
    "HorizontalPodAutoscaler",
    "PodDisruptionBudget",
    "ConfigMap",
    "NetworkPolicy",
    "ServiceMonitor",
    "PrometheusRule",
}
CLUSTER_SCOPED = {"Namespace"}
Obj = dict[str, Any]


def load_all(path: Path) -> list[Obj]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


@cache
def kustomize(directory: Path) -> tuple[Obj, ...]:
    kubectl = shutil.which("kubectl")
    assert kubectl is not None, "kubectl is needed to build deploy/k8s (kubectl kustomize)"
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr.decode()
    return tuple(doc for doc in yaml.safe_load_all(done.stdout) if doc)


def one(objects: tuple[Obj, ...], kind: str) -> Obj:
    (found,) = [o for o in objects if o["kind"] == kind]
    return found


def pod_spec(objects: tuple[Obj, ...]) -> Obj:
    spec: Obj = one(objects, "Deployment")["spec"]["template"]["spec"]
    return spec


def container(objects: tuple[Obj, ...]) -> Obj:
    (found,) = pod_spec(objects)["containers"]
    return dict(found)


def config(objects: tuple[Obj, ...]) -> dict[str, str]:
    data: dict[str, str] = one(objects, "ConfigMap")["data"]
    return data


def selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return bool(selector) and selector.items() <= labels.items()


@cache
def app_routes() -> frozenset[tuple[str, str]]:
    app = create_app(load_settings({}))
    return frozenset(
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None
    )


def shutdown_timeout(settings: dict[str, str]) -> float:
    """What the gateway gives in-flight requests after the drain, as these settings run it."""
    if "SHUTDOWN_TIMEOUT_SECONDS" in settings:
        return float(settings["SHUTDOWN_TIMEOUT_SECONDS"])
    return float(str(variables()["SHUTDOWN_TIMEOUT_SECONDS"]))


def quantity(value: str) -> float:
    """A Kubernetes quantity in bytes or cores."""
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "m": 1e-3, "k": 1e3, "M": 1e6, "G": 1e9}
    for suffix, factor in units.items():
        if value.endswith(suffix):
            return float(value[: -len(suffix)]) * factor
    return float(value)


BUILDS = pytest.mark.parametrize("directory", [BASE, OVERLAY], ids=["base", "overlay"])


# -- the kustomization files -------------------------------------------------------------------
@BUILDS
def test_each_kustomization_names_files_and_objects_that_exist(directory: Path) -> None:
    kustomization = yaml.safe_load((directory / "kustomization.yaml").read_text())
    declared: set[tuple[str, str]] = set()
    for resource in kustomization["resources"]:
        path = directory / resource
        assert path.exists(), f"{directory.name}: resource {resource} does not exist"
        if path.is_dir():
            assert (path / "kustomization.yaml").exists()
            declared |= {(o["kind"], o["metadata"]["name"]) for o in kustomize(path.resolve())}
        else:
            declared |= {(o["kind"], o["metadata"]["name"]) for o in load_all(path)}
    generators = kustomization.get("configMapGenerator", [])
    for generator in generators:
        for env in generator.get("envs", []):
            assert (directory / env).exists(), f"{directory.name}: {env} does not exist"
        if generator.get("behavior") == "merge":
            assert any(kind == "ConfigMap" and generator["name"] in name for kind, name in declared)
        else:
            declared.add(("ConfigMap", generator["name"]))
    for patch in kustomization.get("patches", []):
        (target,) = load_all(directory / patch["path"])
        key = (target["kind"], target["metadata"]["name"])
        assert key in declared, f"{directory.name}: {patch['path']} patches no object: {key}"
    used = container_raw()["image"].split(":")[0]
    for image in kustomization.get("images", []):
        assert image["name"] == used, f"{directory.name}: image {image['name']} is not used"


def container_raw() -> Obj:
    """The Deployment's container as written in base/deployment.yaml (before kustomize)."""
    (deployment,) = load_all(BASE / "deployment.yaml")
    (found,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(found)


# -- what kustomize builds ---------------------------------------------------------------------
@BUILDS
def test_the_build_has_every_object_with_its_required_fields(directory: Path) -> None:
    objects = kustomize(directory)
    assert {o["kind"] for o in objects} >= KINDS
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert len(set(names)) == len(names)
    for obj in objects:
        assert obj["apiVersion"]
        assert obj["metadata"]["name"]
        if obj["kind"] not in CLUSTER_SCOPED and directory == OVERLAY:
            assert obj["metadata"]["namespace"] == "modelrouter", obj["kind"]
    deployment = one(objects, "Deployment")
    assert deployment["apiVersion"] == "apps/v1"
    assert container(objects)["image"].endswith(":0.1.0")


@BUILDS
def test_every_setting_in_the_manifests_is_one_the_gateway_reads(directory: Path) -> None:
    known = set(variables())
    objects = kustomize(directory)
    env = container(objects)
    named = [item["name"] for item in env.get("env", [])]
    for key in [*config(objects), *named]:
        assert key in known, f"{key} is not a setting of modelrouter.config"
    (secret,) = load_all(SECRET_TEMPLATE)
    for key in secret["stringData"]:
        assert key in known, f"{key} (Secret template) is not a setting of modelrouter.config"
    load_settings(dict(config(objects)) | {"API_KEY": "checked-at-start-up"})


def test_the_secret_template_holds_no_secret_and_is_the_one_the_pods_read() -> None:
    (secret,) = load_all(SECRET_TEMPLATE)
    assert secret["kind"] == "Secret"
    assert set(secret["stringData"].values()) == {""}, "a template: every value empty"
    refs = [
        e["secretRef"]["name"] for e in container(kustomize(BASE))["envFrom"] if "secretRef" in e
    ]
    assert refs == [secret["metadata"]["name"]]
    assert {"API_KEY", "REDIS_URL", "DATABASE_URL"} <= set(secret["stringData"])
    for url in STORES:
        assert url not in config(kustomize(BASE)), f"its password makes {url} a secret"


# The stores the gateway connects to, by the setting that names them, with their default port.
STORES = {"REDIS_URL": 6379, "DATABASE_URL": 5432}


@BUILDS
def test_the_pods_may_reach_every_store_the_secret_names(directory: Path) -> None:
    (secret,) = load_all(SECRET_TEMPLATE)
    egress = one(kustomize(directory), "NetworkPolicy")["spec"]["egress"]
    allowed = {p["port"] for rule in egress for p in rule["ports"] if p["protocol"] == "TCP"}
    for url, port in STORES.items():
        assert url in secret["stringData"], f"the Secret template lacks {url}"
        assert port in allowed, f"no egress to {url}'s default port {port}"


@BUILDS
def test_ports_and_probes_are_the_ones_the_app_serves(directory: Path) -> None:
    objects = kustomize(directory)
    settings = config(objects)
    main = container(objects)
    (port,) = main["ports"]
    assert port["containerPort"] == int(settings["PORT"]) == variables()["PORT"]
    assert settings["HOST"] == "0.0.0.0"
    probes = {
        kind: main[kind]["httpGet"] for kind in ("startupProbe", "readinessProbe", "livenessProbe")
    }
    assert probes["readinessProbe"]["path"] == "/ready"
    assert probes["livenessProbe"]["path"] == probes["startupProbe"]["path"] == "/health"
    for probe in probes.values():
        assert ("GET", probe["path"]) in app_routes()
        assert probe["port"] == port["name"]
    service = one(objects, "Service")
    (service_port,) = service["spec"]["ports"]
    assert service_port["targetPort"] == port["name"]
    monitor = one(objects, "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] == service_port["name"]
    assert ("GET", endpoint["path"]) in app_routes()
    policy = one(objects, "NetworkPolicy")
    assert [p["port"] for rule in policy["spec"]["ingress"] for p in rule["ports"]] == ["http"]


@BUILDS
def test_labels_and_selectors_find_the_gateway_pods(directory: Path) -> None:
    objects = kustomize(directory)
    deployment = one(objects, "Deployment")
    pods = deployment["spec"]["template"]["metadata"]["labels"]
    assert selects(deployment["spec"]["selector"]["matchLabels"], pods)
    assert selects(one(objects, "Service")["spec"]["selector"], pods)
    assert selects(one(objects, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"], pods)
    assert selects(one(objects, "NetworkPolicy")["spec"]["podSelector"]["matchLabels"], pods)
    service = one(objects, "Service")
    monitor = one(objects, "ServiceMonitor")
    assert selects(monitor["spec"]["selector"]["matchLabels"], service["metadata"]["labels"])
    (term,) = pod_spec(objects)["affinity"]["podAntiAffinity"][
        "preferredDuringSchedulingIgnoredDuringExecution"
    ]
    assert selects(term["podAffinityTerm"]["labelSelector"]["matchLabels"], pods)
    assert term["podAffinityTerm"]["topologyKey"] == "kubernetes.io/hostname"
    target = one(objects, "HorizontalPodAutoscaler")["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    refs = [e["configMapRef"]["name"] for e in container(objects)["envFrom"] if "configMapRef" in e]
    assert refs == [one(objects, "ConfigMap")["metadata"]["name"]]


@BUILDS
def test_the_pod_outlives_its_drain_and_shutdown(directory: Path) -> None:
    objects = kustomize(directory)
    settings = config(objects)
    pre_stop = container(objects)["lifecycle"]["preStop"]["exec"]["command"]
    assert pre_stop[0] == "sleep"
    drain = float(settings["DRAIN_SECONDS"])
    assert drain > 0, "/ready says 503 for a while before the gateway stops listening"
    needed = float(pre_stop[1]) + drain + shutdown_timeout(settings)
    assert pod_spec(objects)["terminationGracePeriodSeconds"] > needed


@BUILDS
def test_scaling_and_disruptions_keep_the_fleet_limits(directory: Path) -> None:
    objects = kustomize(directory)
    hpa = one(objects, "HorizontalPodAutoscaler")["spec"]
    assert 2 <= hpa["minReplicas"] <= hpa["maxReplicas"]
    # While Redis is away each replica applies limit / REDIS_EXPECTED_REPLICAS: the most
    # replicas there can be, so the fleet stays under every limit.
    assert int(config(objects)["REDIS_EXPECTED_REPLICAS"]) == hpa["maxReplicas"]
    (metric,) = hpa["metrics"]
    assert metric["resource"]["name"] == "cpu"
    assert one(objects, "PodDisruptionBudget")["spec"]["maxUnavailable"] < hpa["minReplicas"]


@BUILDS
def test_the_pod_runs_locked_down(directory: Path) -> None:
    objects = kustomize(directory)
    pod = pod_spec(objects)
    main = container(objects)
    assert pod["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True
    uid = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert uid is not None
    assert pod["securityContext"]["runAsUser"] == int(uid.group(1)), "the image's own user"
    security = main["securityContext"]
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]


def test_resources_follow_the_measured_figures() -> None:
    readme = (ROOT / "README.md").read_text()
    measured = re.search(r"RSS\s+([\d.]+)\s+MB\s+idle,\s+([\d.]+)\s+MB\s+under", readme)
    assert measured is not None, "README's Performance section gives the gateway's RSS"
    resources = container(kustomize(BASE))["resources"]
    requests, limits = resources["requests"], resources["limits"]
    assert quantity(requests["memory"]) >= float(measured.group(2)) * 1e6
    assert quantity(limits["memory"]) >= 4 * quantity(requests["memory"])
    # One event loop: a core is all a replica can use, and less than one throttles it.
    assert quantity(limits["cpu"]) == 1.0
    assert quantity(requests["cpu"]) <= quantity(limits["cpu"])


def test_the_prometheus_rule_is_the_alerts_file() -> None:
    alerts = yaml.safe_load((ROOT / "deploy" / "prometheus" / "alerts.yml").read_text())
    rule = one(kustomize(BASE), "PrometheusRule")
    assert rule["spec"]["groups"] == alerts["groups"]


def test_the_overlay_changes_what_it_says() -> None:
    base, overlay = kustomize(BASE), kustomize(OVERLAY)
    assert container(overlay)["image"] == "registry.example.com/modelrouter:0.1.0"
    assert config(overlay)["PROVIDER_ORDER"] == "groq,openrouter,openai"
    assert config(overlay)["DRAIN_SECONDS"] == config(base)["DRAIN_SECONDS"], "merged, not lost"
    assert one(overlay, "HorizontalPodAutoscaler")["spec"]["maxReplicas"] == 10
    assert pod_spec(overlay)["topologySpreadConstraints"]
    assert pod_spec(overlay)["affinity"] == pod_spec(base)["affinity"]
