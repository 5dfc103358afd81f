"""docs/container.md's YAML examples parse and hold what the text promises (no kubeconform here: offline, and
kubectl's dry runs need a cluster), and the Containerfile keeps its contract with them."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Dict, List

import yaml

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "container.md"


def documents() -> List[Dict[str, Any]]:
    blocks = re.findall(r"^```yaml\n(.*?)^```", DOC.read_text(encoding="utf-8"), flags=re.S | re.M)
    assert len(blocks) >= 3
    found = []
    for block in blocks:
        found.extend(doc for doc in yaml.safe_load_all(block) if doc is not None)
    return found


def kinds(kind: str) -> List[Dict[str, Any]]:
    return [doc for doc in documents() if doc.get("kind") == kind]


def env_of(container: Dict[str, Any]) -> Dict[str, Any]:
    return {item["name"]: item.get("value", item.get("valueFrom")) for item in container.get("env", [])}


def test_compose_runs_the_scheduler_with_a_volume_and_secrets():
    compose = [doc for doc in documents() if "services" in doc]
    assert len(compose) == 1
    compose = compose[0]
    backup = compose["services"]["backup"]
    assert backup["command"][0] == "schedule" and "--serve" in backup["command"]
    assert "backups:/backups" in backup["volumes"] and "backups" in compose["volumes"]
    assert backup["environment"]["PGPASSFILE"] == "/run/secrets/pgpass"
    assert ":" not in backup["environment"]["DATABASE_URL"].split("@")[0].split("//")[1]  # no password in the URL
    assert set(backup["secrets"]) <= set(compose["secrets"]) and backup["depends_on"]["db"]
    assert compose["services"]["db"]["environment"]["POSTGRES_PASSWORD_FILE"].startswith("/run/secrets/")


def test_deployment_is_one_recreated_scheduler_with_probes():
    (deployment,) = kinds("Deployment")
    spec = deployment["spec"]
    assert spec["replicas"] == 1 and spec["strategy"]["type"] == "Recreate"
    assert spec["selector"]["matchLabels"].items() <= spec["template"]["metadata"]["labels"].items()
    pod = spec["template"]["spec"]
    (container,) = pod["containers"]
    assert container["args"][0] == "schedule"
    grace = int(container["args"][container["args"].index("--grace") + 1])
    assert pod["terminationGracePeriodSeconds"] > grace
    assert container["livenessProbe"]["httpGet"]["path"] == "/livez"
    assert container["readinessProbe"]["httpGet"]["path"] == "/healthz"
    assert pod["securityContext"]["runAsUser"] == 10001 and pod["securityContext"]["runAsNonRoot"] is True
    env = env_of(container)
    assert env["PGPASSWORD"]["secretKeyRef"]["name"] == "seawall-pgbackup"
    assert ":" not in env["DATABASE_URL"].split("@")[0].split("//")[1]
    claims = {doc["metadata"]["name"] for doc in kinds("PersistentVolumeClaim")}
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert volumes["backups"]["persistentVolumeClaim"]["claimName"] in claims
    assert env["BACKUP_DIR"].startswith(mounts["backups"] + "/")  # below the group-writable volume root
    assert {doc["metadata"]["name"] for doc in kinds("Secret")} == {"seawall-pgbackup"}


def test_cronjobs_forbid_overlap():
    cronjobs = kinds("CronJob")
    assert len(cronjobs) >= 2
    for cronjob in cronjobs:
        spec = cronjob["spec"]
        assert spec["concurrencyPolicy"] == "Forbid"
        assert len(spec["schedule"].split()) == 5
        pod = spec["jobTemplate"]["spec"]["template"]["spec"]
        assert pod["restartPolicy"] == "Never" and pod["securityContext"]["runAsUser"] == 10001
        (container,) = pod["containers"]
        assert container["args"][0] in ("create", "cleanup", "verify", "health")
    commands = [c["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0]["args"] for c in cronjobs]
    assert ["create", "--type", "full"] in commands


def test_containerfile_matches_the_docs():
    text = (REPO / "Containerfile").read_text(encoding="utf-8")
    assert "ARG BASE=docker.io/library/debian:bookworm-slim" in text
    assert "USER 10001:10001" in text and 'VOLUME ["/backups"]' in text and "BACKUP_DIR=/backups" in text
    assert 'ENTRYPOINT ["seawall-pgbackup"]' in text
    assert 'CMD ["schedule", "--log-format", "json", "--serve", "0.0.0.0:9187"]' in text
    assert "ENV SEAWALL_LIVEZ_URL=http://127.0.0.1:9187/livez" in text
    assert "SEAWALL_LIVEZ_URL" in text.split("HEALTHCHECK")[1]
    ignore = (REPO / ".containerignore").read_text(encoding="utf-8").split()
    for needed in ("Containerfile", "requirements.txt", "pyproject.toml", "setup.py", "plugins/module_utils/pgbackup"):
        assert "!" + needed in ignore
        assert needed.split("/", maxsplit=1)[0] in text or needed == "Containerfile"
