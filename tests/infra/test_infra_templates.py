"""infra/: the work-pool templates render real Kubernetes Jobs through prefect-kubernetes' own code,
the Kubernetes manifests agree with the names those Jobs use, and both images install the lock.

No server and no cluster: `from_template_and_values` + `prepare_for_flow_run` are what the
kubernetes worker runs for each flow run before it sends the Job to the API server.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from importlib.metadata import version
from pathlib import Path

import jsonschema
import pytest
import yaml
from conftest import REPO

INFRA = REPO / "infra"
GPU_TEMPLATE = INFRA / "prefect" / "kubernetes-gpu-pool.json"
CPU_TEMPLATE = INFRA / "prefect" / "kubernetes-cpu-pool.json"
PROCESS_TEMPLATE = INFRA / "prefect" / "process-pool.json"
K8S = INFRA / "k8s"
DOCKERFILES = {"cpu": INFRA / "docker" / "Dockerfile.cpu", "cuda": INFRA / "docker" / "Dockerfile.cuda"}


def load_template(path: Path) -> dict:
    return json.loads(path.read_text())


def render_job(template: dict, values: dict | None = None) -> dict:
    """The Job manifest the kubernetes worker would create for a flow run with these job variables."""
    from prefect.client.schemas.objects import FlowRun
    from prefect_kubernetes.worker import KubernetesWorkerJobConfiguration

    config = asyncio.run(KubernetesWorkerJobConfiguration.from_template_and_values(
        template, values or {}, client=NoClient()))
    config.prepare_for_flow_run(FlowRun(id=uuid.uuid4(), name="nightly-otter", flow_id=uuid.uuid4()))
    return config.job_manifest


class NoClient:
    """Stands in for the Prefect API client: the templates reference no blocks or variables,
    so rendering must never need the API (any use fails the test)."""

    def __getattr__(self, name):
        raise AssertionError(f"rendering the template called the Prefect API ({name})")


def pod_spec(job: dict) -> dict:
    return job["spec"]["template"]["spec"]


def container(job: dict) -> dict:
    return pod_spec(job)["containers"][0]


def k8s_documents(name: str) -> list[dict]:
    return [doc for doc in yaml.safe_load_all((K8S / name).read_text()) if doc]


def k8s_names(kind: str) -> set[str]:
    return {doc["metadata"]["name"] for path in K8S.glob("*.yaml") for doc in k8s_documents(path.name)
            if doc.get("kind") == kind}


# --- the GPU pool's template -----------------------------------------------------------------------


def test_gpu_template_keeps_every_variable_and_setting_of_the_workers_default():
    from prefect_kubernetes.worker import KubernetesWorker

    default = KubernetesWorker.get_default_base_job_template()
    ours = load_template(GPU_TEMPLATE)
    assert set(default["variables"]["properties"]) <= set(ours["variables"]["properties"])
    assert set(default["job_configuration"]) <= set(ours["job_configuration"])
    for key in ("command", "env", "labels", "name", "namespace"):
        assert ours["job_configuration"][key] == default["job_configuration"][key]


@pytest.mark.parametrize("path", [GPU_TEMPLATE, CPU_TEMPLATE, PROCESS_TEMPLATE], ids=lambda p: p.name)
def test_every_default_fits_its_own_variable_schema(path):
    """The server checks deployments' job variables against this schema; a default that does not
    fit it would make every run of the pool invalid."""
    variables = load_template(path)["variables"]
    for name, schema in variables["properties"].items():
        if "default" in schema and "$ref" not in json.dumps(schema):
            jsonschema.validate(schema["default"], schema)


def test_default_gpu_job_requests_one_gpu_on_a_gpu_node():
    job = render_job(load_template(GPU_TEMPLATE))
    assert job["kind"] == "Job" and job["apiVersion"] == "batch/v1"
    resources = container(job)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 1
    assert pod_spec(job)["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod_spec(job)["tolerations"]
    assert container(job)["image"].endswith(":cuda")


def test_gpus_variable_sets_request_and_limit():
    job = render_job(load_template(GPU_TEMPLATE), {"gpus": 2})
    resources = container(job)["resources"]
    assert resources["requests"]["nvidia.com/gpu"] == resources["limits"]["nvidia.com/gpu"] == 2


def test_gpu_job_gets_secrets_as_env_and_a_memory_backed_shm():
    job = render_job(load_template(GPU_TEMPLATE))
    secrets = {ref["secretRef"]["name"]: ref["secretRef"].get("optional", False)
               for ref in container(job)["envFrom"] if "secretRef" in ref}
    assert secrets == {"segflow-wandb": False, "segflow-dvc-remote": False, "segflow-git": True}
    mounts = {m["name"]: m["mountPath"] for m in container(job)["volumeMounts"]}
    volumes = {v["name"]: v for v in pod_spec(job)["volumes"]}
    assert mounts["dshm"] == "/dev/shm"
    assert volumes["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "16Gi"}
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["SEGFLOW_JOB_DIR"] == mounts["scratch"] == container(job)["workingDir"]


def test_gpu_job_leaves_retries_to_prefect_and_runs_the_flow_run():
    job = render_job(load_template(GPU_TEMPLATE))
    assert job["spec"]["backoffLimit"] == 0
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["PREFECT_FLOW_RUN_EXECUTE_SIGTERM_BEHAVIOR"] == "reschedule"  # an evicted pod's run is rescheduled
    assert job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert container(job)["args"] == ["prefect", "flow-run", "execute"]
    assert job["metadata"]["namespace"] == "segflow" and pod_spec(job)["serviceAccountName"] == "segflow-job"
    assert "prefect.io/flow-run-id" in job["spec"]["template"]["metadata"]["labels"]  # what the observer watches


@pytest.mark.parametrize("path", [GPU_TEMPLATE, CPU_TEMPLATE], ids=lambda p: p.name)
def test_stage_processes_import_the_cloned_commits_code(path, tmp_path, monkeypatch):
    """The pods' PYTHONPATH=src puts the clone's src/ ahead of the image's segflow in every Python
    process started in the clone's root (dvc runs `segflow stage ...` there), so a stage runs the
    commit DVC hashed, not the code the image was built from."""
    import subprocess
    import sys

    env = {e["name"]: e.get("value") for e in container(render_job(load_template(path)))["env"]}
    (tmp_path / "src" / "segflow").mkdir(parents=True)
    (tmp_path / "src" / "segflow" / "__init__.py").write_text("")
    found = subprocess.run([sys.executable, "-c", "import segflow; print(segflow.__file__)"], cwd=tmp_path,
                           env={"PATH": "/usr/bin:/bin", "PYTHONPATH": env["PYTHONPATH"]},
                           capture_output=True, text=True, check=True).stdout.strip()
    assert Path(found).resolve() == (tmp_path / "src" / "segflow" / "__init__.py").resolve()


def test_deployment_env_adds_to_the_templates_env():
    job = render_job(load_template(GPU_TEMPLATE), {"env": {"WANDB_ENTITY": "team"}})
    env = {e["name"]: e.get("value") for e in container(job)["env"]}
    assert env["WANDB_ENTITY"] == "team"
    assert env["SEGFLOW_JOB_DIR"] == "/scratch" and env["DVC_NO_ANALYTICS"] == "1"


def test_variables_without_a_default_leave_no_empty_fields():
    job = render_job(load_template(GPU_TEMPLATE))
    limits = container(job)["resources"]["limits"]
    assert "cpu" not in limits  # no CPU limit by default: DataLoader and NCCL threads are not throttled
    assert limits["memory"] == "64Gi"
    assert "priorityClassName" not in pod_spec(job)
    assert "null" not in json.dumps(job) and "{{" not in json.dumps(job)


# --- the CPU pool's template -----------------------------------------------------------------------


def test_cpu_job_has_no_gpu_and_keeps_the_registry_volume():
    job = render_job(load_template(CPU_TEMPLATE))
    resources = container(job)["resources"]
    assert "nvidia.com/gpu" not in resources["requests"] and "nvidia.com/gpu" not in resources.get("limits", {})
    assert "nodeSelector" not in pod_spec(job) or pod_spec(job)["nodeSelector"] == {}
    mounts = {m["name"]: m["mountPath"] for m in container(job)["volumeMounts"]}
    claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod_spec(job)["volumes"]
              if "persistentVolumeClaim" in v}
    assert mounts["registry"] == "/srv/segflow-registry" and claims["registry"] == "segflow-registry"
    assert container(job)["image"].endswith(":cpu")


def test_cpu_and_gpu_templates_differ_only_in_gpu_and_registry_parts():
    def shape(path: Path) -> dict:
        manifest = json.loads(json.dumps(load_template(path)["job_configuration"]))
        pod = manifest["job_manifest"]["spec"]["template"]["spec"]
        for part in ("requests", "limits"):
            pod["containers"][0]["resources"][part].pop("nvidia.com/gpu", None)
        pod["containers"][0]["volumeMounts"] = [m for m in pod["containers"][0]["volumeMounts"] if m["name"] != "registry"]
        pod["volumes"] = [v for v in pod["volumes"] if v["name"] != "registry"]
        return manifest

    assert shape(CPU_TEMPLATE) == shape(GPU_TEMPLATE)


# --- the process pool (one machine) ----------------------------------------------------------------


def test_process_template_loads_as_the_process_workers_configuration():
    from prefect.workers.process import ProcessJobConfiguration

    config = asyncio.run(ProcessJobConfiguration.from_template_and_values(
        load_template(PROCESS_TEMPLATE), {}, client=NoClient()))
    assert config.env["DVC_NO_ANALYTICS"] == "1" and config.env["WANDB_MODE"] == "offline"
    assert config.stream_output is True


# --- Kubernetes manifests --------------------------------------------------------------------------

EXPECTED_KINDS = {
    "namespace.yaml": ["Namespace"],
    "rbac.yaml": ["ServiceAccount", "ServiceAccount", "Role", "RoleBinding"],
    "config.yaml": ["ConfigMap", "ConfigMap"],
    "storage.yaml": ["PersistentVolumeClaim"],
    "secrets.example.yaml": ["Secret", "Secret", "Secret", "Secret"],
    "workers.yaml": ["Deployment", "Deployment"],
    "prefect-server.yaml": ["PersistentVolumeClaim", "Deployment", "Service"],
    "kustomization.yaml": ["Kustomization"],
}


def test_every_manifest_parses_with_the_expected_kinds():
    assert {p.name for p in K8S.glob("*.yaml")} == set(EXPECTED_KINDS)
    for name, kinds in EXPECTED_KINDS.items():
        docs = k8s_documents(name)
        assert [d["kind"] for d in docs] == kinds, name
        for doc in docs:
            if doc["kind"] not in ("Namespace", "Kustomization"):
                assert doc["metadata"]["namespace"] == "segflow", f"{name}: {doc['metadata']['name']}"


def test_kustomization_lists_existing_files_and_no_secrets():
    resources = k8s_documents("kustomization.yaml")[0]["resources"]
    assert all((K8S / r).is_file() for r in resources)
    assert "secrets.example.yaml" not in resources


def test_one_kubernetes_worker_per_pool_with_the_bound_service_account():
    workers = {d["metadata"]["name"]: d["spec"]["template"]["spec"] for d in k8s_documents("workers.yaml")}
    binding = next(d for d in k8s_documents("rbac.yaml") if d["kind"] == "RoleBinding")
    bound = {s["name"] for s in binding["subjects"]}
    pools = set()
    for spec in workers.values():
        args = spec["containers"][0]["args"]
        assert args[:3] == ["prefect", "worker", "start"]
        assert args[args.index("--type") + 1] == "kubernetes"
        assert "--no-create-pool-if-not-found" in args  # pools come from infra/prefect templates only
        pools.add(args[args.index("--pool") + 1])
        assert spec["serviceAccountName"] in bound
    assert pools == {"segflow-cpu", "segflow-gpu"}


def test_worker_role_can_create_jobs_and_follow_their_pods():
    role = next(d for d in k8s_documents("rbac.yaml") if d["kind"] == "Role")
    granted = {(group, resource, verb) for rule in role["rules"] for group in rule["apiGroups"]
               for resource in rule["resources"] for verb in rule["verbs"]}
    for verb in ("create", "get", "list", "watch", "delete"):
        assert ("batch", "jobs", verb) in granted
    for resource in ("pods", "pods/log"):
        for verb in ("get", "list", "watch"):
            assert ("", resource, verb) in granted
    config = k8s_documents("config.yaml")[0]["data"]
    # Namespaced RBAC holds only while the observer watches just this namespace.
    assert config["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == role["metadata"]["namespace"]


@pytest.mark.parametrize("path", [GPU_TEMPLATE, CPU_TEMPLATE], ids=lambda p: p.name)
def test_template_defaults_name_objects_the_manifests_define(path):
    variables = load_template(path)["variables"]["properties"]
    assert variables["namespace"]["default"] in k8s_names("Namespace")
    assert variables["service_account_name"]["default"] in k8s_names("ServiceAccount")
    for ref in variables["env_from"]["default"]:
        kind, target = ("Secret", ref["secretRef"]) if "secretRef" in ref else ("ConfigMap", ref["configMapRef"])
        assert target["name"] in k8s_names(kind), f"{kind} {target['name']}"
    if "registry_claim" in variables:
        assert variables["registry_claim"]["default"] in k8s_names("PersistentVolumeClaim")


def test_secret_templates_hold_placeholders_only():
    for secret in k8s_documents("secrets.example.yaml"):
        for key, value in (secret.get("stringData") or {}).items():
            placeholder = value.startswith("<") and value.endswith(">")
            assert placeholder or key in {"WANDB_MODE", "WANDB_PROJECT"}, f"{secret['metadata']['name']}.{key}"


def test_helm_values_run_a_kubernetes_worker_from_the_segflow_image():
    values = yaml.safe_load((INFRA / "helm" / "prefect-worker-values.yaml").read_text())["worker"]
    assert values["config"]["type"] == "kubernetes"
    assert values["image"]["repository"] == "ghcr.io/segflow/segflow" and values["image"]["prefectTag"] == "cpu"
    env = {e["name"]: e["value"] for e in values["extraEnvVars"]}
    assert env["PREFECT_INTEGRATIONS_KUBERNETES_OBSERVER_NAMESPACES"] == "segflow"


# --- images and locks ------------------------------------------------------------------------------


def lock_pins(path: Path) -> dict[str, str]:
    pins = {}
    for line in path.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, pinned = line.partition("==")
            assert pinned, f"{path.name}: {line} is not an exact pin"
            pins[re.sub(r"[-_.]+", "-", name).lower()] = pinned
    return pins


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_image_installs_torch_2_13_then_the_lock(flavour):
    text = DOCKERFILES[flavour].read_text()
    torch = text.index("pip install --no-cache-dir torch==2.13.0")
    lock = text.index("-r requirements.lock -r infra/docker/remotes.lock")
    assert torch < lock < text.index("--no-deps -e .") < text.index("&& pip check")
    assert "COPY pyproject.toml requirements.lock README.md ./" in text
    # The worker passes `prefect flow-run execute` as args: no program may sit in the entrypoint.
    assert 'ENTRYPOINT ["tini", "--"]' in text and "USER 1000:1000" in text  # numeric: runAsNonRoot can check it


def test_cpu_and_cuda_images_differ_only_in_the_torch_wheel():
    def steps(path: Path) -> list[str]:
        lines = [line for line in path.read_text().splitlines() if line.strip() and not line.startswith("#")]
        return [line for line in lines if not line.startswith("ARG TORCH_INDEX_URL")]

    cpu, cuda = steps(DOCKERFILES["cpu"]), steps(DOCKERFILES["cuda"])
    differing = [(a, b) for a, b in zip(cpu, cuda) if a != b]
    assert len(cpu) == len(cuda) and len(differing) == 1, differing
    assert "whl/cpu" in differing[0][0] and "${TORCH_INDEX_URL}" in differing[0][1]


@pytest.mark.parametrize("flavour", sorted(DOCKERFILES))
def test_build_context_sends_what_the_image_copies(flavour):
    ignore = (DOCKERFILES[flavour].parent / f"{DOCKERFILES[flavour].name}.dockerignore").read_text()
    copied = re.findall(r"^COPY (.+) \S+$", DOCKERFILES[flavour].read_text(), flags=re.M)
    for source in " ".join(copied).split():
        assert (REPO / source).exists(), source
        assert f"!{source}" in ignore or f"!{source}/" in ignore, f"{source} is excluded from the context"


def test_remote_plugins_lock_changes_nothing_in_the_main_lock():
    main, remotes = lock_pins(REPO / "requirements.lock"), lock_pins(INFRA / "docker" / "remotes.lock")
    assert {"dvc-s3", "dvc-gs", "s3fs", "gcsfs"} <= set(remotes)
    assert not set(main) & set(remotes)


def test_prefect_kubernetes_is_pinned_and_installed():
    pins = lock_pins(REPO / "requirements.lock")
    assert version("prefect-kubernetes") == pins["prefect-kubernetes"]
    assert version("prefect") == pins["prefect"] == "3.8.8"
