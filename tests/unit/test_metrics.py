"""metrics.py: the exposition text parses, label values are escaped, files are written atomically with the right mode."""

from __future__ import annotations

import os
from datetime import timedelta

import pytest

from seawall_pgbackup.repo.catalog import Repository
from seawall_pgbackup.config.settings import load_config
from seawall_pgbackup.observe.metrics import METRICS, collect, metrics_text, render, textfile_targets, write_textfile
from seawall_pgbackup.model.runrecord import write_run
from tests.unit.test_health_checks import NOW, _backup

try:
    from prometheus_client import parser
except ImportError:  # requirements-dev.txt; in CI a missing parser fails
    if os.environ.get("CI"):
        raise
    pytest.skip("prometheus_client is not installed", allow_module_level=True)


def test_text_parses_with_every_family_and_escaped_labels(tmp_path):
    repo = Repository(str(tmp_path))
    repo.prepare()
    _backup(repo, "full", timedelta(hours=3), size=1234)
    write_run(repo.log_dir, {"job": "create-full", "command": "create", "kind": "full", "database": 'we"ird\\db\n',
                             "status": "failed", "started_at": "2026-11-26T09:00:00.000000Z", "duration_seconds": 2.5})
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path)})
    families = {f.name: f for f in parser.text_string_to_metric_families(metrics_text(cfg))}
    # a counter's family is named without its _total suffix
    assert set(families) == {"seawall_backup_" + (name[:-6] if METRICS[name][0] == "counter" else name) for name in METRICS}
    size = [s for s in families["seawall_backup_last_size_bytes"].samples if s.labels["kind"] == "full"]
    assert [s.value for s in size] == [1234]
    run = families["seawall_backup_last_run_success"].samples
    assert [(s.labels["database"], s.value) for s in run] == [('we"ird\\db\n', 0.0)]
    assert families["seawall_backup_last_run_duration_seconds"].samples[0].value == 2.5
    assert families["seawall_backup_last_success_timestamp_seconds"].samples[0].value == \
        (NOW - timedelta(hours=3) + timedelta(minutes=1)).timestamp()


def test_atomic_write_and_modes(tmp_path):
    cfg = load_config(env={"BACKUP_DIR": str(tmp_path / "repo")})
    assert textfile_targets(cfg, None) == [(str(tmp_path / "repo" / "logs"), 0o600)]
    assert textfile_targets(cfg, str(tmp_path)) == [(str(tmp_path), 0o644)]
    first = write_textfile(str(tmp_path), render(collect(cfg, now=1.0)))
    assert oct(os.stat(first).st_mode & 0o777) == "0o644" and os.listdir(tmp_path) == ["seawall_pgbackup.prom"]
    write_textfile(str(tmp_path), "# replaced\n", mode=0o600)
    assert open(first).read() == "# replaced\n" and oct(os.stat(first).st_mode & 0o777) == "0o600"
    assert os.listdir(tmp_path) == ["seawall_pgbackup.prom"]
