"""The Helm chart (helm/keyward), rendered offline for its default values and for each
ci/*-values.yaml: it lints strictly, every manifest validates against Kubernetes 1.30's
schemas, and the rendered objects keep the deployment's security properties.

No cluster and no database: rendering is Helm's Go library (helm-python-sdk), validation
is kubernetes-validate's bundled schemas.
"""

from __future__ import annotations

import base64
import functools
import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import helm_python as helm
import kubernetes_validate
import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "helm" / "keyward"
CASES = [
    "default",
    *sorted(p.name.removesuffix("-values.yaml") for p in (CHART / "ci").glob("*-values.yaml")),
]
KUBERNETES = "1.30.0"
# Custom resources kubernetes-validate has no schema for; checked field by field below.
CUSTOM_KINDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"),
    ("monitoring.coreos.com/v1", "PodMonitor"),
}
SECRET_MOUNT = "/run/secrets/keyward"


def secret_variables() -> set[str]:
    """Every variable the README's Configuration table marks secret."""
    names: set[str] = set()
    for line in (ROOT / "README.md").read_text().splitlines():
        cells = [c.strip() for c in line.split("|")]
        if len(cells) < 5 or not cells[1].startswith("`KEYWARD_"):
            continue
        marked, secret = re.findall(r"`(KEYWARD_[A-Z0-9_]+)`", cells[1]), cells[3]
        if ":" in secret:  # "secret id: yes": only the variable that names it
            part, _, answer = secret.partition(":")
            marked = [n for n in marked if part.strip().upper().replace(" ", "_") in n]
            secret = answer
        if secret.strip().startswith("yes"):
            names.update(marked)
    return names


SECRET_VARIABLES = secret_variables()


def values_for(case: str) -> dict[str, Any]:
    if case == "default":
        return {}
    loaded: dict[str, Any] = yaml.safe_load((CHART / "ci" / f"{case}-values.yaml").read_text())
    return loaded


@functools.cache
def chart() -> helm.Chart:
    return helm.Chart.load(CHART)


@functools.cache
def merged(case: str) -> dict[str, Any]:
    return chart().merge_values(values_for(case))


def render(values: dict[str, Any]) -> list[dict[str, Any]]:
    files = chart().render(values, name="kw", namespace="keyward", is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if not path.endswith("NOTES.txt")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


@functools.cache
def _rendered(case: str) -> tuple[dict[str, Any], ...]:
    return tuple(render(values_for(case)))


def manifests(case: str) -> list[dict[str, Any]]:
    return list(_rendered(case))


def of_kind(case: str, kind: str) -> list[dict[str, Any]]:
    return [m for m in manifests(case) if m["kind"] == kind]


def component(manifest: dict[str, Any]) -> str:
    labels = manifest["spec"]["template"]["metadata"]["labels"]
    return str(labels["app.kubernetes.io/component"])


def workload(case: str, kind: str, name: str) -> dict[str, Any]:
    (found,) = [m for m in of_kind(case, kind) if component(m) == name]
    return found


def pods(case: str) -> Iterator[tuple[str, dict[str, Any]]]:
    for m in manifests(case):
        if m["kind"] in ("Deployment", "Job"):
            yield component(m), m["spec"]["template"]["spec"]


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod["containers"]]


def secret_file_source(
    pod: dict[str, Any], container: dict[str, Any], path: str
) -> tuple[str, str]:
    """The (Secret name, key) a file in the container comes from; fails if not a Secret."""
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for mount in container.get("volumeMounts", []):
        prefix = mount["mountPath"].rstrip("/") + "/"
        if not path.startswith(prefix):
            continue
        volume, file = volumes[mount["name"]], path.removeprefix(prefix)
        sources = (
            [{"secret": volume["secret"] | {"name": volume["secret"]["secretName"]}}]
            if "secret" in volume
            else volume.get("projected", {}).get("sources", [])
        )
        for source in sources:
            assert set(source) == {"secret"}, f"{path} is not mounted from a Secret"
            for item in source["secret"].get("items", []):
                if item["path"] == file:
                    return source["secret"]["name"], item["key"]
    raise AssertionError(f"{path} is not mounted from a Secret")


def file_env(container: dict[str, Any], variable: str) -> str | None:
    for entry in container.get("env", []):
        if entry["name"] == f"{variable}_FILE":
            return str(entry["value"])
    return None


def vault_kubernetes_auth(case: str) -> bool:
    values = merged(case)
    return bool(values["secretStore"] == "vault" and values["vault"]["auth"] == "kubernetes")


def secret_data(case: str, name: str) -> dict[str, str]:
    (secret,) = [s for s in of_kind(case, "Secret") if s["metadata"]["name"] == name]
    return {k: base64.b64decode(v).decode() for k, v in secret.get("data", {}).items()}


def test_the_ci_values_cover_each_deployment_shape() -> None:
    assert {
        "vault-approle",
        "vault-kubernetes",
        "existing-secret",
        "high-availability",
        "audit-witnesses",
    } <= set(CASES)
    assert {
        "KEYWARD_DATABASE_URL",
        "KEYWARD_PEPPERS",
        "KEYWARD_VAULT_SECRET_ID",
        "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY",
    } <= SECRET_VARIABLES
    assert SECRET_VARIABLES.isdisjoint(
        {"KEYWARD_VAULT_ROLE_ID", "KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID"}
    )


@pytest.mark.parametrize("case", CASES)
def test_the_chart_lints_strictly(case: str) -> None:
    report = helm.lint(CHART, values_for(case), strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("case", CASES)
def test_every_manifest_validates_against_kubernetes(case: str) -> None:
    kinds = set()
    for manifest in manifests(case):
        kinds.add(manifest["kind"])
        if (manifest["apiVersion"], manifest["kind"]) in CUSTOM_KINDS:
            continue
        kubernetes_validate.validate(manifest, KUBERNETES, strict=True)
    assert {"Deployment", "Service", "ConfigMap", "Job"} <= kinds


@pytest.mark.parametrize("case", CASES)
def test_no_container_runs_as_root_or_writes_its_root_filesystem(case: str) -> None:
    for name, pod in pods(case):
        pod_context = pod.get("securityContext", {})
        assert pod_context["seccompProfile"]["type"] == "RuntimeDefault", name
        for container in containers(pod):
            context = {**pod_context, **container.get("securityContext", {})}
            assert context.get("runAsNonRoot") is True, name
            assert isinstance(context.get("runAsUser"), int) and context["runAsUser"] > 0, name
            assert context.get("readOnlyRootFilesystem") is True, name
            assert context.get("allowPrivilegeEscalation") is False, name
            assert context.get("privileged", False) is False, name
            assert "ALL" in context["capabilities"]["drop"], name
            assert not context["capabilities"].get("add"), name
            tmp = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
            volumes = {v["name"]: v for v in pod["volumes"]}
            assert len(tmp) == 1 and "emptyDir" in volumes[tmp[0]["name"]], name


@pytest.mark.parametrize("case", CASES)
def test_every_secret_variable_comes_from_a_secret(case: str) -> None:
    for name, pod in pods(case):
        for container in containers(pod):
            for entry in container.get("env", []):
                variable = entry["name"].removesuffix("_FILE")
                if variable not in SECRET_VARIABLES:
                    continue
                if entry["name"] == variable:  # the value itself: only from a Secret
                    assert set(entry) == {"name", "valueFrom"}, (name, variable)
                    assert "secretKeyRef" in entry["valueFrom"], (name, variable)
                else:
                    secret_file_source(pod, container, entry["value"])
            for source in container.get("envFrom", []):
                assert "configMapRef" in source or "secretRef" in source
    for config_map in of_kind(case, "ConfigMap"):
        assert not {k.removesuffix("_FILE") for k in config_map["data"]} & SECRET_VARIABLES


@pytest.mark.parametrize("case", CASES)
def test_no_secret_value_appears_outside_a_secret(case: str) -> None:
    values = merged(case)
    given = [
        values["database"]["url"],
        values["database"]["migrationUrl"],
        values["broker"]["url"],
        values["redis"]["url"],
        values["vault"]["token"],
        values["vault"]["approle"]["secretId"],
        *values["secrets"].values(),
    ]
    given = [g for g in given if isinstance(g, str) and len(g) > 8]
    for manifest in manifests(case):
        if manifest["kind"] == "Secret":
            continue
        text = yaml.safe_dump(manifest)
        for value in given:
            assert value not in text, (manifest["kind"], manifest["metadata"]["name"])


@pytest.mark.parametrize("case", CASES)
def test_the_pods_read_the_settings_production_requires(case: str) -> None:
    required = {"KEYWARD_SECRET_KEY", "KEYWARD_PEPPERS", "KEYWARD_AUDIT_HMAC_KEY"}
    if merged(case)["existingSecret"] or merged(case)["database"]["url"]:
        required |= {"KEYWARD_DATABASE_URL", "KEYWARD_BROKER_URL"}
    for name, pod in pods(case):
        (container,) = pod["containers"]
        assert all(file_env(container, v) for v in required), name
        config = {e["name"] for e in container["env"]}
        if name != "migrate":
            (config_map,) = of_kind(case, "ConfigMap")
            config |= set(config_map["data"])
        assert {"KEYWARD_PRODUCTION", "KEYWARD_ALLOWED_HOSTS", "KEYWARD_SECRET_STORE"} <= config


def test_pods_log_json_lines_unless_told_otherwise() -> None:
    (config_map,) = of_kind("default", "ConfigMap")
    assert config_map["data"]["KEYWARD_LOG_FORMAT"] == "json"
    text = render({"config": {"logFormat": "text"}})
    assert [m["data"]["KEYWARD_LOG_FORMAT"] for m in text if m["kind"] == "ConfigMap"] == ["text"]
    with pytest.raises(helm.HelmValuesError):
        chart().render({"config": {"logFormat": "xml"}})


@pytest.mark.parametrize("case", CASES)
def test_beat_runs_exactly_one_replica_replaced_with_recreate(case: str) -> None:
    beat = workload(case, "Deployment", "beat")
    assert beat["spec"]["replicas"] == 1
    assert beat["spec"]["strategy"] == {"type": "Recreate"}
    assert beat["spec"]["template"]["spec"]["containers"][0]["args"][0] == "beat"
    for hpa in of_kind(case, "HorizontalPodAutoscaler"):
        assert hpa["spec"]["scaleTargetRef"]["name"] != beat["metadata"]["name"]


@pytest.mark.parametrize("case", CASES)
def test_the_migration_job_connects_as_the_migration_role(case: str) -> None:
    values = merged(case)
    job = workload(case, "Job", "migrate")
    pod = job["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"] == ["migrate"]
    env = {e["name"]: e.get("value") for e in container["env"]}
    assert env["KEYWARD_DB_APP_ROLE"] == values["database"]["appRole"]
    path = file_env(container, "KEYWARD_DATABASE_URL")
    assert bool(path) == bool(values["existingSecret"] or values["database"]["migrationUrl"])
    if path:
        secret, key = secret_file_source(pod, container, path)
        assert key == "database-migration-url"
        if values["existingSecret"]:
            assert secret == (values["existingMigrationSecret"] or values["existingSecret"])
        else:
            url = secret_data(case, secret)[key]
            assert url == values["database"]["migrationUrl"]
            assert url.startswith("postgres://keyward_owner:")
    if not values["existingSecret"]:
        assert "database-migration-url" not in secret_data(case, "kw-keyward")
    # Nothing else connects as the migration role.
    for name, other in pods(case):
        if name == "migrate":
            continue
        (app,) = other["containers"]
        app_path = file_env(app, "KEYWARD_DATABASE_URL")
        assert bool(app_path) == bool(values["existingSecret"] or values["database"]["url"])
        if app_path:
            assert secret_file_source(other, app, app_path)[1] == "database-url", name


def test_most_cases_give_the_migration_job_its_own_credentials() -> None:
    configured = [
        c for c in CASES if merged(c)["existingSecret"] or merged(c)["database"]["migrationUrl"]
    ]
    assert len(configured) >= 4


@pytest.mark.parametrize("case", CASES)
def test_the_migration_job_is_a_hook_unless_told_otherwise(case: str) -> None:
    job = workload(case, "Job", "migrate")
    hook = job["metadata"].get("annotations", {}).get("helm.sh/hook")
    if merged(case)["migrations"]["hook"]:
        assert hook == "pre-install,pre-upgrade"
    else:
        assert hook is None
        assert job["metadata"]["name"].endswith(merged(case)["migrations"]["jobNameSuffix"])


@pytest.mark.parametrize("case", CASES)
def test_the_service_account_token_is_mounted_only_for_vault_kubernetes_auth(case: str) -> None:
    kubernetes_auth = vault_kubernetes_auth(case)
    for name, pod in pods(case):
        projected = [
            source["serviceAccountToken"]
            for volume in pod["volumes"]
            for source in volume.get("projected", {}).get("sources", [])
            if "serviceAccountToken" in source
        ]
        automount = pod.get("automountServiceAccountToken")
        assert automount in (True, False), name  # never left to the cluster's default
        if kubernetes_auth and name != "migrate":
            assert automount or projected, name
            audience = merged(case)["vault"]["kubernetes"]["audience"]
            assert (automount is False) == bool(audience), name
            assert all(p["audience"] == audience for p in projected), name
        else:
            assert automount is False and projected == [], name
    for account in of_kind(case, "ServiceAccount"):
        assert account["automountServiceAccountToken"] is False


def test_both_ways_of_vault_kubernetes_auth_are_rendered() -> None:
    assert vault_kubernetes_auth("default") and vault_kubernetes_auth("vault-kubernetes")
    web = workload("default", "Deployment", "web")["spec"]["template"]["spec"]
    assert web["automountServiceAccountToken"] is False
    env = {e["name"]: e.get("value") for e in web["containers"][0]["env"]}
    (config_map,) = of_kind("default", "ConfigMap")
    token_path = config_map["data"]["KEYWARD_VAULT_K8S_JWT_PATH"]
    assert (
        token_path.startswith("/var/run/secrets/vault/") and "KEYWARD_VAULT_K8S_JWT_PATH" not in env
    )
    mounted = workload("vault-kubernetes", "Deployment", "web")["spec"]["template"]["spec"]
    assert mounted["automountServiceAccountToken"] is True


def egress_ports(policy: dict[str, Any]) -> set[tuple[int, str]]:
    ports: set[tuple[int, str]] = set()
    for rule in policy["spec"]["egress"]:
        assert rule.get("ports"), "an egress rule without ports allows every port"
        ports |= {(p["port"], p["protocol"]) for p in rule["ports"]}
    return ports


def test_the_network_policy_allows_only_the_egress_keyward_needs() -> None:
    policies = {p["metadata"]["name"]: p for p in of_kind("high-availability", "NetworkPolicy")}
    egress = policies["kw-keyward"]
    assert set(egress["spec"]["policyTypes"]) == {"Ingress", "Egress"}
    assert egress["spec"]["ingress"] == []
    assert egress_ports(egress) == {
        (53, "UDP"),
        (53, "TCP"),
        (5432, "TCP"),
        (6379, "TCP"),
        (8200, "TCP"),
        (443, "TCP"),
    }
    https = [r for r in egress["spec"]["egress"] if r["ports"][0]["port"] == 443]
    blocked = {e for peer in https[0]["to"] for e in peer["ipBlock"].get("except", [])}
    assert {"10.0.0.0/8", "169.254.0.0/16", "192.168.0.0/16", "172.16.0.0/12"} <= blocked
    selector = egress["spec"]["podSelector"]["matchLabels"]
    for name, pod_template in (
        (m["metadata"]["name"], m["spec"]["template"]["metadata"]["labels"])
        for m in manifests("high-availability")
        if m["kind"] in ("Deployment", "Job")
    ):
        assert selector.items() <= pod_template.items(), name
    http = policies["kw-keyward-http"]
    assert http["spec"]["policyTypes"] == ["Ingress"]
    (component_rule,) = [
        e for e in http["spec"]["podSelector"]["matchExpressions"] if e["key"].endswith("component")
    ]
    assert sorted(component_rule["values"]) == ["proxy", "web"]
    assert [p["port"] for rule in http["spec"]["ingress"] for p in rule["ports"]] == ["http"]
    assert all(rule.get("from") for rule in http["spec"]["ingress"])


def test_no_network_policy_unless_enabled() -> None:
    assert of_kind("default", "NetworkPolicy") == []


@pytest.mark.parametrize("case", CASES)
def test_web_and_proxy_probe_health_and_readiness(case: str) -> None:
    for name, port in (("web", 8000), ("proxy", 8001)):
        (container,) = workload(case, "Deployment", name)["spec"]["template"]["spec"]["containers"]
        assert container["args"][0] == name
        assert container["ports"] == [{"name": "http", "containerPort": port, "protocol": "TCP"}]
        assert container["startupProbe"]["httpGet"]["path"] == "/healthz"
        assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
        assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
        assert container["resources"]["requests"] and container["resources"]["limits"]


def test_pods_roll_when_the_configuration_changes() -> None:
    def annotations(values: dict[str, Any]) -> dict[str, str]:
        (web,) = [m for m in render(values) if m["kind"] == "Deployment" and component(m) == "web"]
        found: dict[str, str] = web["spec"]["template"]["metadata"]["annotations"]
        return found

    base = values_for("vault-approle")
    before = annotations(base)
    assert before == annotations(base)
    changed = annotations({**base, "config": {**base["config"], "logLevel": "DEBUG"}})
    assert changed["checksum/config"] != before["checksum/config"]
    assert changed["checksum/secret"] == before["checksum/secret"]
    rotated = annotations({**base, "broker": {"url": "redis://other:6379/0"}})
    assert rotated["checksum/secret"] != before["checksum/secret"]


def test_the_ingress_sends_the_proxy_path_to_the_asgi_service() -> None:
    (ingress,) = of_kind("vault-approle", "Ingress")
    (rule,) = ingress["spec"]["rules"]
    routes = {p["path"]: p["backend"]["service"]["name"] for p in rule["http"]["paths"]}
    assert routes == {
        "/api/v1/proxy/": "kw-keyward-proxy",
        "/api/": "kw-keyward-web",
        "/static/": "kw-keyward-web",
    }  # never /: /healthz, /readyz and /metrics stay inside the cluster
    services = {s["metadata"]["name"]: s for s in of_kind("vault-approle", "Service")}
    assert (
        services["kw-keyward-proxy"]["spec"]["selector"]["app.kubernetes.io/component"] == "proxy"
    )
    assert services["kw-keyward-web"]["spec"]["selector"]["app.kubernetes.io/component"] == "web"


def test_high_availability_scales_and_protects_web_proxy_and_worker() -> None:
    deployments = {m["metadata"]["name"]: m for m in of_kind("high-availability", "Deployment")}
    scaled = {
        h["spec"]["scaleTargetRef"]["name"]
        for h in of_kind("high-availability", "HorizontalPodAutoscaler")
    }
    assert scaled == {"kw-keyward-web", "kw-keyward-proxy", "kw-keyward-worker"}
    for name in scaled:
        assert "replicas" not in deployments[name]["spec"]  # the autoscaler owns it
    budgets = of_kind("high-availability", "PodDisruptionBudget")
    protected = set()
    for budget in budgets:
        selector = budget["spec"]["selector"]["matchLabels"]
        matched = [
            n
            for n, d in deployments.items()
            if selector.items() <= d["spec"]["template"]["metadata"]["labels"].items()
        ]
        assert len(matched) == 1
        protected |= set(matched)
    assert protected == scaled
    assert deployments["kw-keyward-sequencer"]["spec"]["replicas"] == 2
    (monitor,) = of_kind("high-availability", "ServiceMonitor")
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["path"] == "/metrics" and endpoint["port"] == "http"
    for service in of_kind("high-availability", "Service"):  # web and proxy both
        labels = service["metadata"]["labels"]
        assert all(
            labels.get(e["key"]) in e["values"]
            for e in monitor["spec"]["selector"]["matchExpressions"]
        ), service["metadata"]["name"]


def test_every_keyward_variable_the_chart_sets_is_one_the_code_reads() -> None:
    read = set()
    for path in ROOT.glob("*/**/*.py"):
        if path.parts[len(ROOT.parts)] in ("tests", "benchmarks", ".venv"):
            continue
        read |= set(re.findall(r"KEYWARD_[A-Z0-9_]+", path.read_text()))
    set_by_chart = set()
    for case in CASES:
        for config_map in of_kind(case, "ConfigMap"):
            set_by_chart |= set(config_map["data"])
        for _, pod in pods(case):
            for container in containers(pod):
                set_by_chart |= {e["name"].removesuffix("_FILE") for e in container.get("env", [])}
    set_by_chart = {n for n in set_by_chart if n.startswith("KEYWARD_")}
    assert set_by_chart and set_by_chart <= read, set_by_chart - read


@pytest.mark.parametrize(
    "values",
    [
        {"securityContext": {"readOnlyRootFilesystem": False}},
        {"securityContext": {"runAsNonRoot": False}},
        {"securityContext": {"allowPrivilegeEscalation": True}},
        {"podSecurityContext": {"runAsUser": 0}},
        {"config": {"extraEnv": {"KEYWARD_DATABASE_URL": "postgres://u:p@db/keyward"}}},
        {"config": {"extraEnv": {"KEYWARD_PRODUCTION": "false"}}},
        {"secretStore": "file"},
    ],
)
def test_the_schema_refuses_values_that_weaken_the_deployment(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart().render(values)


def test_the_readme_documents_every_value() -> None:
    values = yaml.safe_load((CHART / "values.yaml").read_text())
    table = (CHART / "README.md").read_text().partition("\n## Values\n")[2]
    rows = re.findall(r"^\| `([A-Za-z0-9_.]+)` \|", table, re.MULTILINE)
    documented = set(rows)

    def leaves(prefix: str, node: Any) -> Iterator[str]:
        if isinstance(node, dict) and node and prefix not in documented:
            for key, child in node.items():
                yield from leaves(f"{prefix}.{key}" if prefix else key, child)
        else:
            yield prefix

    assert set(leaves("", values)) <= documented
    for row in documented:
        node = values
        for part in row.split("."):
            node = node[part]  # a row for a value that no longer exists fails here


def test_the_project_readme_values_example_renders_and_validates() -> None:
    readme = (ROOT / "README.md").read_text().partition("### Deploy on Kubernetes")[2]
    example = yaml.safe_load(readme.partition("```yaml")[2].partition("```")[0])
    assert example["vault"]["auth"] == "kubernetes" and example["existingSecret"]
    documents = render(example)
    kinds = {d["kind"] for d in documents}
    assert {"Ingress", "HorizontalPodAutoscaler", "PodDisruptionBudget", "NetworkPolicy"} <= kinds
    for manifest in documents:
        if (manifest["apiVersion"], manifest["kind"]) not in CUSTOM_KINDS:
            kubernetes_validate.validate(manifest, KUBERNETES, strict=True)


def test_prometheus_scrapes_web_proxy_and_worker_pods() -> None:
    documents = manifests("high-availability")
    (monitor,) = [d for d in documents if d["kind"] == "ServiceMonitor"]
    (components,) = [
        e["values"]
        for e in monitor["spec"]["selector"]["matchExpressions"]
        if e["key"] == "app.kubernetes.io/component"
    ]
    assert sorted(components) == ["proxy", "web"]
    (pod_monitor,) = [d for d in documents if d["kind"] == "PodMonitor"]
    assert pod_monitor["spec"]["podMetricsEndpoints"][0]["port"] == "metrics"
    (worker,) = workload("high-availability", "Deployment", "worker")["spec"]["template"]["spec"][
        "containers"
    ]
    assert {"name": "KEYWARD_WORKER_METRICS_PORT", "value": "9100"} in worker["env"]
    assert worker["ports"] == [{"name": "metrics", "containerPort": 9100, "protocol": "TCP"}]
    policies = {d["metadata"]["name"]: d for d in documents if d["kind"] == "NetworkPolicy"}
    ingress = policies["kw-keyward-worker-metrics"]["spec"]["ingress"]
    assert [p["port"] for rule in ingress for p in rule["ports"]] == ["metrics"]


def test_readiness_can_leave_the_shared_dependencies_to_keywards_own_503() -> None:
    documents = render({"probes": {"readinessPath": "/healthz"}})
    for deployment in (d for d in documents if d["kind"] == "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            if "readinessProbe" in container:
                assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    with pytest.raises(helm.HelmValuesError):
        chart().render({"probes": {"readinessPath": "/"}})


# The audit log's checkpoints: ci/audit-witnesses-values.yaml sets an origin, two witnesses
# and a bucket with static credentials.
AUDIT = "audit-witnesses"
BUCKET_SECRET_KEY = "audit-checkpoint-s3-secret-access-key"
WITNESS_KEY = values_for(AUDIT)["audit"]["witnesses"][0]["key"]


def config_map(case_or_documents: str | list[dict[str, Any]]) -> dict[str, str]:
    documents = (
        manifests(case_or_documents) if isinstance(case_or_documents, str) else case_or_documents
    )
    (found,) = [d for d in documents if d["kind"] == "ConfigMap"]
    data: dict[str, str] = found["data"]
    return data


def with_audit(**changes: Any) -> dict[str, Any]:
    """The audit-witnesses case with these fields of its `audit` block changed."""
    return {**values_for(AUDIT), "audit": {**values_for(AUDIT)["audit"], **changes}}


def test_the_config_map_carries_the_audit_settings_as_given() -> None:
    audit = merged(AUDIT)["audit"]
    bucket = audit["checkpointBucket"]
    data = config_map(AUDIT)
    assert data["KEYWARD_AUDIT_ORIGIN"] == audit["origin"] == "keyward.example.com/audit"
    pairs = [entry.split() for entry in data["KEYWARD_AUDIT_WITNESSES"].split(",")]
    assert pairs == [[w["key"], w["url"]] for w in audit["witnesses"]] and len(pairs) == 2
    assert data["KEYWARD_AUDIT_WITNESS_QUORUM"] == "1"
    assert data["KEYWARD_AUDIT_WITNESS_TIMEOUT_MS"] == "3000"
    assert data["KEYWARD_SCHEDULE_SIGN_CHECKPOINTS"] == "30"
    assert data["KEYWARD_AUDIT_CHECKPOINT_S3_URL"] == bucket["url"]
    assert data["KEYWARD_AUDIT_CHECKPOINT_S3_ENDPOINT"] == bucket["endpoint"]
    assert data["KEYWARD_AUDIT_CHECKPOINT_S3_REGION"] == bucket["region"]
    assert data["KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID"] == bucket["accessKeyId"]
    assert data["KEYWARD_AUDIT_CHECKPOINT_S3_TIMEOUT_MS"] == "4000"
    assert "KEYWARD_AUDIT_CHECKPOINT_DIR" not in data
    # The CA bundle's path is the ConfigMap's key, mounted in every pod.
    ca_path = data["KEYWARD_AUDIT_CHECKPOINT_S3_CACERT"]
    for name, pod in pods(AUDIT):
        (container,) = pod["containers"]
        (mount,) = [m for m in container["volumeMounts"] if ca_path.startswith(m["mountPath"])]
        (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
        assert volume["configMap"]["name"] == bucket["caCert"]["configMap"], name
        assert [i["path"] for i in volume["configMap"]["items"]] == [ca_path.rsplit("/", 1)[1]]


def test_without_audit_values_only_the_signing_interval_is_set() -> None:
    audit = {k: v for k, v in config_map("default").items() if "AUDIT" in k or "CHECKPOINT" in k}
    assert audit == {"KEYWARD_SCHEDULE_SIGN_CHECKPOINTS": "60"}
    for name, pod in pods("default"):
        assert all("configMap" not in v for v in pod["volumes"]), name


def test_the_settings_accept_the_audit_configuration_the_chart_renders(tmp_path: Path) -> None:
    """The web pod's environment, its secret files copied out of the Secret, read by the
    application's own settings in a fresh interpreter."""
    web = workload(AUDIT, "Deployment", "web")["spec"]["template"]["spec"]
    (container,) = web["containers"]
    env = {k: v for k, v in os.environ.items() if not k.startswith("KEYWARD_")}
    env |= config_map(AUDIT) | {"DJANGO_SETTINGS_MODULE": "settings.settings"}
    env["KEYWARD_DATA_DIR"] = str(tmp_path / "data")
    stored = secret_data(AUDIT, "kw-keyward")
    for entry in container["env"]:
        if entry["name"].endswith("_FILE"):
            _, key = secret_file_source(web, container, entry["value"])
            (tmp_path / key).write_text(stored[key])
            env[entry["name"]] = str(tmp_path / key)
        elif "value" in entry:
            env[entry["name"]] = entry["value"]
    probe = (
        "import json, django; django.setup(); from django.conf import settings as s; "
        "print(json.dumps([s.AUDIT_ORIGIN, s.AUDIT_WITNESSES, s.AUDIT_WITNESS_QUORUM, "
        "s.AUDIT_WITNESS_TIMEOUT_MS, s.AUDIT_CHECKPOINT_S3]))"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    origin, witnesses, quorum, timeout, bucket = json.loads(done.stdout.splitlines()[-1])
    audit = merged(AUDIT)["audit"]
    assert origin == audit["origin"]
    assert witnesses == [[w["key"], w["url"]] for w in audit["witnesses"]]
    assert (quorum, timeout) == (1, 3000)
    assert bucket["bucket"] == "keyward-audit" and bucket["prefix"] == "checkpoints/"
    assert (
        bucket["secret_access_key"] == merged(AUDIT)["secrets"]["checkpointBucketSecretAccessKey"]
    )
    assert bucket["ca_cert"] == "/etc/keyward/checkpoint-s3-ca/ca.crt"


def test_the_bucket_secret_access_key_reaches_pods_only_from_the_secret() -> None:
    given = merged(AUDIT)["secrets"]["checkpointBucketSecretAccessKey"]
    for name, pod in pods(AUDIT):
        (container,) = pod["containers"]
        path = file_env(container, "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY")
        assert path, name
        secret, key = secret_file_source(pod, container, path)
        assert key == BUCKET_SECRET_KEY
        assert secret_data(AUDIT, secret)[key] == given, name
        assert all(
            e["name"] != "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY" for e in container["env"]
        )
    for manifest in manifests(AUDIT):
        if manifest["kind"] != "Secret":
            assert given not in yaml.safe_dump(manifest), manifest["metadata"]["name"]
    # From an existingSecret, by its key there.
    existing = render({**values_for("existing-secret"), "audit": values_for(AUDIT)["audit"]})
    assert not [d for d in existing if d["kind"] == "Secret"]
    for deployment in (d for d in existing if d["kind"] == "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        path = file_env(container, "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY")
        assert path and secret_file_source(pod, container, path) == (
            "keyward-secrets",
            BUCKET_SECRET_KEY,
        )


def test_without_an_access_key_id_the_bucket_uses_the_sdks_own_credentials() -> None:
    audit = values_for(AUDIT)["audit"]
    bucket = {k: v for k, v in audit["checkpointBucket"].items() if k != "accessKeyId"}
    secrets = dict(values_for(AUDIT)["secrets"])
    del secrets["checkpointBucketSecretAccessKey"]
    values = {**with_audit(checkpointBucket=bucket), "secrets": secrets}
    documents = render(values)
    assert "KEYWARD_AUDIT_CHECKPOINT_S3_ACCESS_KEY_ID" not in config_map(documents)
    for document in documents:
        if document["kind"] == "Secret":
            assert BUCKET_SECRET_KEY not in document.get("data", {})
        if document["kind"] in ("Deployment", "Job"):
            (container,) = document["spec"]["template"]["spec"]["containers"]
            assert not file_env(container, "KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY")


@pytest.mark.parametrize(
    "values",
    [
        {"audit": {"origin": "keyward.example.com/audit log"}},
        {"audit": {"origin": "keyward.example.com+audit"}},
        {"audit": {"origin": "keyward.example.com/\taudit"}},
        {"audit": {"witnesses": [{"key": WITNESS_KEY, "url": "ftp://witness.example.org"}]}},
        {"audit": {"witnesses": [{"key": WITNESS_KEY, "url": "witness.example.org:7380"}]}},
        {"audit": {"witnesses": [{"key": WITNESS_KEY, "url": "https://user:pw@witness.example"}]}},
        {"audit": {"witnesses": [{"key": WITNESS_KEY, "url": "https://w.example/a,https://b"}]}},
        {"audit": {"witnesses": [{"key": "not a key", "url": "https://witness.example.org"}]}},
        {"audit": {"witnesses": [{"url": "https://witness.example.org"}]}},
        {"audit": {"witnessQuorum": -1}},
        {"audit": {"witnessTimeoutMs": 10}},
        {"audit": {"checkpointBucket": {"url": "https://bucket.s3.amazonaws.com"}}},
        {"audit": {"checkpointBucket": {"url": "s3://Bucket_Name"}}},
        {"audit": {"checkpointBucket": {"endpoint": "https://minio.storage.svc:9000"}}},
        {"audit": {"checkpointBucket": {"url": "s3://keyward-audit", "endpoint": "minio:9000"}}},
        {"audit": {"checkpointBucket": {"url": "s3://keyward-audit", "region": "us east"}}},
        {"secrets": {"checkpointBucketSecretAccessKey": "secret-without-its-key-id"}},
        {"config": {"extraEnv": {"KEYWARD_AUDIT_CHECKPOINT_DIR": "/tmp/checkpoints"}}},
        {"config": {"extraEnv": {"KEYWARD_AUDIT_CHECKPOINT_S3_SECRET_ACCESS_KEY": "s"}}},
    ],
)
def test_the_schema_refuses_malformed_audit_settings(values: dict[str, Any]) -> None:
    with pytest.raises(helm.HelmValuesError):
        chart().render(values)


def test_a_quorum_above_the_number_of_witnesses_is_refused() -> None:
    assert render(with_audit(witnessQuorum=2))
    refused = r"audit\.witnessQuorum: \d+, more than the \d+ witnesses"
    with pytest.raises(helm.HelmRenderError, match=refused):
        render(with_audit(witnessQuorum=3))
    with pytest.raises(helm.HelmRenderError, match=refused):
        chart().render({"audit": {"witnessQuorum": 1}})


def audit_egress(documents: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The egress rules after the fixed ones (DNS, PostgreSQL, Redis, Vault, HTTPS)."""
    (policy,) = [
        d
        for d in documents
        if d["kind"] == "NetworkPolicy" and d["metadata"]["name"] == "kw-keyward"
    ]
    rules: list[dict[str, Any]] = policy["spec"]["egress"][5:]
    return rules


def test_the_network_policy_allows_the_witnesses_and_the_bucket() -> None:
    values = merged(AUDIT)
    witnesses, bucket = audit_egress(manifests(AUDIT))
    # https://witness.example.org/w1 on 443, http://...svc:7380 on its own port.
    assert [(p["port"], p["protocol"]) for p in witnesses["ports"]] == [(443, "TCP"), (7380, "TCP")]
    assert witnesses["to"] == values["networkPolicy"]["egress"]["witnesses"]["to"]
    assert [(p["port"], p["protocol"]) for p in bucket["ports"]] == [(9000, "TCP")]
    assert bucket["to"] == values["networkPolicy"]["egress"]["checkpointBucket"]["to"]
    # No rule of their own when neither is set.
    assert len(audit_egress(manifests("high-availability"))) == 0


def test_audit_egress_without_peers_reaches_public_addresses_only() -> None:
    """An empty `to` would allow every address on 443 or 80, the metadata service's
    among them: the rules take the HTTPS rule's public-only peers instead."""
    audit = values_for(AUDIT)["audit"]
    bucket = {k: v for k, v in audit["checkpointBucket"].items() if k not in ("endpoint", "caCert")}
    values = with_audit(
        witnesses=[{"key": WITNESS_KEY, "url": "http://witness.example.org/w1"}],
        witnessQuorum=1,
        checkpointBucket=bucket,
    )
    values["networkPolicy"] = {"enabled": True}
    public = merged("default")["networkPolicy"]["egress"]["https"]["to"]
    witnesses, aws = audit_egress(render(values))
    assert [p["port"] for p in witnesses["ports"]] == [80] and witnesses["to"] == public
    assert [p["port"] for p in aws["ports"]] == [443] and aws["to"] == public


def test_notes_remind_the_operator_to_name_the_audit_log() -> None:
    def notes(values: dict[str, Any]) -> str:
        files = chart().render(values, name="kw", namespace="keyward", is_install=True)
        (text,) = [t for p, t in files.items() if p.endswith("NOTES.txt")]
        return text

    assert "audit.origin is not set" in notes({})
    assert "audit.origin" not in notes(values_for(AUDIT))
    local = notes({"secretStore": "local"})
    assert "lost when it restarts" in local
    bucket = {"url": "s3://keyward-audit"}
    assert "lost" not in notes({"secretStore": "local", "audit": {"checkpointBucket": bucket}})
