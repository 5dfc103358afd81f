"""The filters behind roles/cloud: retention_horizon_days, cloud_lifecycle, s3_bucket_changes."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

_COLLECTIONS = str(Path(__file__).resolve().parents[2] / ".collections")
if _COLLECTIONS not in sys.path:
    sys.path.insert(0, _COLLECTIONS)

from ansible.errors import AnsibleFilterError  # noqa: E402

from ansible_collections.seawall.pgbackup.plugins.filter.cloud_lifecycle import cloud_lifecycle  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.filter.retention_horizon_days import retention_horizon_days  # noqa: E402
from ansible_collections.seawall.pgbackup.plugins.filter.s3_bucket_changes import s3_bucket_changes  # noqa: E402


# ------------------------------------------------------------------------------------------------ retention_horizon_days

@pytest.mark.parametrize("config, margin, expected", [
    ({}, 31, 12 * 31 + 31),                    # the engine's defaults: full and globals 12 monthly
    (None, 0, 12 * 31),
    ({"backup": {"types": {"full": {"retention": {"daily": 3}}, "globals": {"enabled": False}}}}, 31,
     8 * 7 + 31),                               # the schema backups' 8 weekly are now the longest
    ({"backup": {"types": {"full": {"retention": {"yearly": 2}}}}}, 10, 2 * 366 + 10),
    ({"backup": {"types": {k: {"enabled": False} for k in ("full", "schema", "globals", "data", "base")}}}, 0,
     7),  # incremental 7 daily
    ({"backup": {"types": {k: {"enabled": False} for k in ("full", "schema", "globals", "data")}}}, 0,
     28),  # base backups: 4 weekly
    ({"backup": {"types": {"full": {"enabled": False}, "schema": {"enabled": False}, "globals": {"enabled": False},
                           "base": {"enabled": False},
                           "incremental": {"retention": {"hourly": 30}}}}}, 0, 2),  # 30 hours -> 2 days
    ({"backup": {"types": {"full": {"retention": {"keep_last": 500}}, "globals": {"enabled": False},
                           "schema": {"enabled": False}, "base": {"enabled": False}}}}, 0,
     7),  # counts do not lengthen the horizon
])
def test_retention_horizon_days(config, margin, expected):
    assert retention_horizon_days(config, margin_days=margin) == expected


@pytest.mark.parametrize("config, margin, message", [
    ({"backup": {"types": {"full": {"retention": {"monthly": "twelve"}}}}}, 31, "backup.types.full.retention.monthly='twelve'"),
    ("not a dict", 31, "must be a dictionary"),
    ({}, -1, "margin_days=-1 is not valid"),
    ({}, True, "margin_days=True is not valid"),
])
def test_retention_horizon_days_rejects(config, margin, message):
    with pytest.raises(AnsibleFilterError, match=message.replace("(", r"\(").replace(")", r"\)")):
        retention_horizon_days(config, margin_days=margin)


# ------------------------------------------------------------------------------------------------ cloud_lifecycle

def test_s3_rules_with_versioning():
    rules = cloud_lifecycle("s3", expiration_days=403, prefix="/vtt/", versioning=True, noncurrent_days=30,
                            abort_multipart_days=7,
                            transitions=[{"days": 30, "storage_class": "standard_ia"}, {"days": 90, "storage_class": "GLACIER_IR"}])
    assert rules == [
        {"rule_id": "seawall-pgbackup-expire", "prefix": "vtt/", "status": "enabled", "expiration_days": 403,
         "transitions": [{"transition_days": 30, "storage_class": "STANDARD_IA"},
                         {"transition_days": 90, "storage_class": "GLACIER_IR"}],
         "noncurrent_version_expiration_days": 30, "abort_incomplete_multipart_upload_days": 7},
        {"rule_id": "seawall-pgbackup-delete-markers", "prefix": "vtt/", "status": "enabled",
         "expire_object_delete_marker": True},
    ]


def test_s3_rules_without_anything_to_do():
    assert cloud_lifecycle("s3", expiration_days=0, abort_multipart_days=0) == []
    assert cloud_lifecycle("s3", expiration_days=10, abort_multipart_days=0) == [
        {"rule_id": "seawall-pgbackup-expire", "prefix": "", "status": "enabled", "expiration_days": 10}]


def test_azure_and_gcs_rules():
    assert cloud_lifecycle("azure", expiration_days=403, container="pg", prefix="vtt",
                           transitions=[{"days": 180, "storage_class": "archive"}]) == [
        {"name": "seawall-pgbackup", "type": "Lifecycle", "enabled": True, "definition": {
            "actions": {"base_blob": {"tier_to_archive": {"days_after_modification_greater_than": 180},
                                      "delete": {"days_after_modification_greater_than": 403}}},
            "filters": {"blob_types": ["blockBlob"], "prefix_match": ["pg/vtt/"]}}}]
    assert cloud_lifecycle("azure", expiration_days=0) == []
    gcs = cloud_lifecycle("gcs", expiration_days=403, versioning=False,
                          transitions=[{"days": 90, "storage_class": "coldline"}])
    assert gcs == {"rule": [
        {"action": {"type": "SetStorageClass", "storage_class": "COLDLINE"}, "condition": {"age_days": 90}},
        {"action": {"type": "Delete"}, "condition": {"age_days": 403}}]}


@pytest.mark.parametrize("provider, kwargs, message", [
    ("b2", {}, "provider 'b2' is not valid"),
    ("s3", {"expiration_days": "soon"}, "expiration_days='soon' is not valid"),
    ("s3", {"expiration_days": -1}, "expiration_days=-1 is not valid"),
    ("s3", {"transitions": [{"days": 30, "storage_class": "COLDLINE"}]}, "storage_class='COLDLINE' is not valid for s3"),
    ("gcs", {"transitions": [{"days": 30, "storage_class": "GLACIER"}]}, "storage_class='GLACIER' is not valid for gcs"),
    ("s3", {"transitions": [{"days": 90, "storage_class": "GLACIER"}, {"days": 30, "storage_class": "STANDARD_IA"}]},
     "transitions[1].days=30 must be later than the transition before it (90)"),
    ("s3", {"expiration_days": 60, "transitions": [{"days": 90, "storage_class": "GLACIER"}]},
     "transitions[0].days=90 must be before the expiration (60 days)"),
    ("s3", {"transitions": [{"days": 0, "storage_class": "GLACIER"}]}, "transitions[0].days=0 is not valid"),
    ("s3", {"transitions": [{"after": 30}]}, "use {days: N, storage_class: NAME}"),
    ("s3", {"transitions": "GLACIER"}, "transitions must be a list"),
])
def test_cloud_lifecycle_rejects(provider, kwargs, message):
    with pytest.raises(AnsibleFilterError) as caught:
        cloud_lifecycle(provider, **kwargs)
    assert message in str(caught.value)


# ------------------------------------------------------------------------------------------------ s3_bucket_changes

RULES = cloud_lifecycle("s3", expiration_days=403, prefix="vtt", versioning=True,
                        transitions=[{"days": 30, "storage_class": "STANDARD_IA"}])


def _as_s3_returns(params):
    """The rule as GetBucketLifecycleConfiguration returns it (what s3_lifecycle put)."""
    rule = {"ID": params["rule_id"], "Filter": {"Prefix": params["prefix"]}, "Status": "Enabled"}
    if "expiration_days" in params:
        rule["Expiration"] = {"Days": params["expiration_days"]}
    if "expire_object_delete_marker" in params:
        rule["Expiration"] = {"ExpiredObjectDeleteMarker": True}
    if "transitions" in params:
        rule["Transitions"] = [{"Days": t["transition_days"], "StorageClass": t["storage_class"]} for t in params["transitions"]]
    if "noncurrent_version_expiration_days" in params:
        rule["NoncurrentVersionExpiration"] = {"NoncurrentDays": params["noncurrent_version_expiration_days"]}
    if "abort_incomplete_multipart_upload_days" in params:
        rule["AbortIncompleteMultipartUpload"] = {"DaysAfterInitiation": params["abort_incomplete_multipart_upload_days"]}
    return rule


def _bucket(**overrides):
    bucket = {
        "name": "b",
        "bucket_versioning": {"Status": "Enabled"},
        "bucket_encryption": {"ServerSideEncryptionConfiguration": {"Rules": [
            {"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]}},
        "public_access_block": {"PublicAccessBlockConfiguration": {k: True for k in (
            "BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy", "RestrictPublicBuckets")}},
        "bucket_lifecycle_configuration": {"Rules": [_as_s3_returns(r) for r in RULES]
                                           + [{"ID": "someone-elses", "Filter": {"Prefix": "x/"}, "Status": "Enabled"}]},
    }
    bucket.update(overrides)
    return bucket


WANTED = {"versioning": True, "encryption": "AES256", "public_access_block": True, "rules": RULES}


def test_a_bucket_as_wanted_has_no_changes():
    assert s3_bucket_changes(_bucket(), **WANTED) == []


def test_a_missing_bucket_needs_everything():
    assert s3_bucket_changes(None, **WANTED) == [
        "create the bucket", "versioning: Disabled -> Enabled", "default encryption: none -> AES256",
        "public access block: BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets -> on",
        "add lifecycle rule seawall-pgbackup-expire", "add lifecycle rule seawall-pgbackup-delete-markers"]


def test_each_difference_is_named():
    changed = _bucket(bucket_versioning={"Status": "Suspended"}, public_access_block={})
    changed["bucket_lifecycle_configuration"]["Rules"][0]["Transitions"][0]["Days"] = 60
    assert s3_bucket_changes(changed, versioning=True, encryption="aws:kms", kms_key_id="arn:k",
                             public_access_block=True, rules=RULES) == [
        "versioning: Suspended -> Enabled", "default encryption: AES256 -> aws:kms arn:k",
        "public access block: BlockPublicAcls, IgnorePublicAcls, BlockPublicPolicy, RestrictPublicBuckets -> on",
        "update lifecycle rule seawall-pgbackup-expire"]
    # None leaves a setting alone; a never-versioned bucket needs nothing to stay unversioned.
    assert s3_bucket_changes(_bucket(bucket_versioning={}), versioning=False, encryption="none",
                             public_access_block=None, rules=[]) == []


def test_tags_are_compared_key_by_key():
    bucket = _bucket(bucket_tagging={"purpose": "backups", "team": "db"})
    assert s3_bucket_changes(bucket, tags={"purpose": "backups"}) == []
    assert s3_bucket_changes(bucket, tags={"purpose": "pg", "cost": 7}) == ["tags: cost, purpose"]
    assert s3_bucket_changes(_bucket(bucket_tagging={"cost": "7"}), tags={"cost": 7}) == []


def test_s3_bucket_changes_rejects_bad_input():
    with pytest.raises(AnsibleFilterError, match="encryption='aes' is not valid"):
        s3_bucket_changes(None, encryption="aes")
    with pytest.raises(AnsibleFilterError, match="each with rule_id"):
        s3_bucket_changes(None, rules=[{"prefix": ""}])
    with pytest.raises(AnsibleFilterError, match="must be an s3_bucket_info bucket or None"):
        s3_bucket_changes(["b"])
