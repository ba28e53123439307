"""deploy/kubernetes (a documented example; no cluster here) and deploy/README.md: the manifests
parse, there is one worker Deployment per queue of the project (read from the code, not a copied
list), each runs its queue's Procfile line and is scaled by a KEDA ScaledObject on that queue's
``disputes_queue_depth``, and the scaling guide covers every Procfile process — so none of it
can drift from the code unnoticed."""
from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

from disputes.settings import QUEUES
from tests.deploy.prom import DEPLOY_README, KUBERNETES, REPO, metric_names


def documents(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text(encoding="utf-8")) if d]


@pytest.fixture(scope="module")
def manifests() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text(encoding="utf-8"))
    files = sorted(p.name for p in KUBERNETES.glob("*.yaml") if p.name != "kustomization.yaml")
    assert sorted(kustomization["resources"]) == files, "kustomization.yaml lists every manifest"
    return [d for name in files for d in documents(KUBERNETES / name)]


def procfile() -> dict[str, list[str]]:
    """Each Procfile process and its command (without the shell's ``exec``)."""
    lines = (REPO / "Procfile").read_text(encoding="utf-8").splitlines()
    found = {}
    for line in lines:
        if line.strip() and not line.startswith("#"):
            name, command = line.split(":", 1)
            argv = shlex.split(command)
            found[name.strip()] = argv[1:] if argv[0] == "exec" else argv
    return found


def of_kind(manifests: list[dict[str, Any]], kind: str) -> dict[str, dict[str, Any]]:
    return {d["metadata"]["name"]: d for d in manifests if d["kind"] == kind}


def option(argv: list[str], name: str) -> list[str]:
    """The values after `name` up to the next option."""
    if name not in argv:
        return []
    rest = argv[argv.index(name) + 1:]
    return rest[:next((i for i, a in enumerate(rest) if a.startswith("-")), len(rest))]


def worker_queue(deployment: dict[str, Any]) -> str | None:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    argv = container["command"] + container.get("args", [])
    if argv[0] != "dramatiq":
        return None
    (queue,) = option(argv, "--queues")
    return queue


def test_every_manifest_parses_and_names_its_kind(manifests) -> None:
    assert manifests
    for d in manifests:
        assert d["apiVersion"] and d["kind"] and d["metadata"]["name"], d


def test_one_worker_deployment_per_queue_of_the_project(manifests) -> None:
    queues = [q for q in map(worker_queue, of_kind(manifests, "Deployment").values()) if q]
    assert sorted(queues) == sorted(QUEUES)


def test_each_worker_runs_its_queues_procfile_line(manifests) -> None:
    lines = procfile()
    for name, deployment in of_kind(manifests, "Deployment").items():
        queue = worker_queue(deployment)
        if queue is None:
            continue
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        argv = container["command"] + container.get("args", [])
        expected = lines[queue]
        # The same entry module and queue as the Procfile line; processes and threads may differ.
        assert argv[:2] == expected[:2] == ["dramatiq", f"workers.{queue}"], (name, argv, expected)
        assert option(argv, "--queues") == option(expected, "--queues") == [queue], (name, argv)
        selector = deployment["spec"]["selector"]["matchLabels"]
        assert selector.items() <= deployment["spec"]["template"]["metadata"]["labels"].items(), name


def test_each_worker_deployment_is_scaled_by_keda_on_its_own_queue_length(manifests) -> None:
    deployments = of_kind(manifests, "Deployment")
    scaled = of_kind(manifests, "ScaledObject")
    by_queue = {}
    for name, scaler in scaled.items():
        assert scaler["apiVersion"] == "keda.sh/v1alpha1"
        target = deployments[scaler["spec"]["scaleTargetRef"]["name"]]
        queue = worker_queue(target)
        assert queue in QUEUES, f"ScaledObject {name} scales {target['metadata']['name']}, not a queue's workers"
        (trigger,) = scaler["spec"]["triggers"]
        assert trigger["type"] == "prometheus"
        query = trigger["metadata"]["query"]
        named = re.findall(r'queue\s*=\s*"([^"]+)"', query)
        assert named == [queue], f"ScaledObject {name} asks about {named}, its Deployment serves {queue}"
        assert metric_names(query) == {"disputes_queue_depth"}, query
        assert query.replace(" ", "").startswith("max("), "every API replica reports the same depth: max, not sum"
        assert int(trigger["metadata"]["threshold"]) > 0
        assert 1 <= scaler["spec"]["minReplicaCount"] <= scaler["spec"]["maxReplicaCount"]
        by_queue[queue] = name
    assert sorted(by_queue) == sorted(QUEUES)


def test_every_process_of_the_procfile_is_deployed(manifests) -> None:
    deployed = set()
    for deployment in of_kind(manifests, "Deployment").values():
        (container,) = deployment["spec"]["template"]["spec"]["containers"]
        argv = container["command"] + container.get("args", [])
        deployed.add(worker_queue(deployment) or argv[1])
    assert deployed == set(procfile())


def test_the_scaling_guide_covers_every_procfile_process_and_scales_each_queue_on_its_depth() -> None:
    readme = DEPLOY_README.read_text(encoding="utf-8")
    section = readme.split("\n## Scaling", 1)[1].split("\n## ", 1)[0]
    rows = {m.group(1): m.group(0) for m in re.finditer(r"^\| `([a-z0-9]+)`.*$", section, flags=re.MULTILINE)}
    assert set(rows) == set(procfile()), "one row per Procfile process in deploy/README.md's scaling table"
    for queue in QUEUES:
        assert f'disputes_queue_depth{{queue="{queue}"}}' in rows[queue], rows[queue]
