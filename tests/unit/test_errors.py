"""The error model (docs/errors.md): one exit code per kind, documented, and messages free of flag names."""

from __future__ import annotations

import ast
import errno
import importlib
import json
import pkgutil
import re
from pathlib import Path
from typing import Dict, List, Set

import pytest

import seawall_pgbackup
from seawall_pgbackup.cli.main import CLI_HINTS, main
from seawall_pgbackup.core import errors
from seawall_pgbackup.core.errors import (HINTS, INTERRUPTED_EXIT_CODE, KINDS, BackupError, ConfigError, KeyMissing,
                                          NotFound, ResourceError, exit_code_of, file_error, render)

ROOT = Path(__file__).resolve().parents[2]
ENGINE = ROOT / "plugins" / "module_utils" / "pgbackup"
DOCS = ROOT / "docs" / "errors.md"
COMMON = ROOT / "plugins" / "module_utils" / "common.py"
COMMAND = re.compile(r"seawall-pgbackup (create|list|restore|verify|drill|cleanup|health|sync|serve|keygen|rekey)\b")


def _all_engine_modules() -> None:
    for info in pkgutil.walk_packages(seawall_pgbackup.__path__, seawall_pgbackup.__name__ + "."):
        if not info.name.endswith("__main__"):
            importlib.import_module(info.name)


def _subclasses(cls: type) -> List[type]:
    found = []
    for sub in cls.__subclasses__():
        found.append(sub)
        found.extend(_subclasses(sub))
    return found


def _docs_rows() -> List[Dict[str, str]]:
    """The rows of the exit-code table in docs/errors.md."""
    text = DOCS.read_text(encoding="utf-8")
    table = text.split("## Exit codes", 1)[1].split("\n\n", 2)[1]
    lines = [ln for ln in table.splitlines() if ln.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    rows = []
    for line in lines[2:]:
        cells = [c.strip() for c in line.strip("|").split("|")]
        rows.append(dict(zip(header, cells)))
    return rows


def test_every_kind_has_its_own_exit_code_kind_and_step():
    codes = [cls.exit_code for cls in KINDS]
    assert len(set(codes)) == len(codes), codes
    names = [cls.kind for cls in KINDS]
    assert len(set(names)) == len(names), names
    for cls in KINDS:
        # declared on the class itself, not inherited by accident
        assert {"kind", "exit_code", "step"} <= set(vars(cls)), cls
        # 0 success, 1 Python's traceback and health WARNING, 2 argparse and health CRITICAL, 130 interrupted
        assert cls.exit_code not in (0, 1, 2, INTERRUPTED_EXIT_CODE) and 0 < cls.exit_code < 126, cls
    assert set(KINDS) == {BackupError} | {c for c in _subclasses(BackupError) if c.__module__ == errors.__name__}


def test_every_error_class_in_the_engine_is_one_of_the_kinds():
    _all_engine_modules()
    by_code = {cls.exit_code: cls for cls in KINDS}
    subclasses = _subclasses(BackupError)
    assert len(subclasses) >= len(KINDS) - 1
    for cls in subclasses:
        if cls.__module__.startswith("tests"):
            continue
        assert cls.exit_code in by_code and issubclass(cls, by_code[cls.exit_code]), cls
        assert cls.kind == by_code[cls.exit_code].kind, cls


def test_docs_table_matches_the_code():
    rows = _docs_rows()
    documented = {r["Class"].strip("`"): r for r in rows if r["Class"] != "-"}
    assert set(documented) == {cls.__name__ for cls in KINDS}
    for cls in KINDS:
        row = documented[cls.__name__]
        assert (row["Kind"], int(row["Exit code"]), row["Step"]) == (cls.kind, cls.exit_code, cls.step), row
        assert row["Meaning"] and row["What to do"], row
    others = {r["Kind"]: int(r["Exit code"]) for r in rows if r["Class"] == "-"}
    assert others == {"ok": 0, "unexpected": 1, "usage": 2, "interrupted": INTERRUPTED_EXIT_CODE}
    codes = [int(r["Exit code"]) for r in rows]
    assert len(set(codes)) == len(codes), codes


def _literal_steps() -> Set[str]:
    """Every step name the engine gives as a literal: ``step="..."`` keywords and ``step = "..."`` class attributes."""
    steps = set()
    for path in ENGINE.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.keyword) and node.arg == "step" and isinstance(node.value, ast.Constant) \
                    and isinstance(node.value.value, str):
                steps.add(node.value.value)
            elif (isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["step"]
                  and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)):
                steps.add(node.value.value)
    return steps


def test_every_step_is_documented():
    text = DOCS.read_text(encoding="utf-8").split("## Steps", 1)[1]
    documented = set(re.findall(r"^\| ([a-z-]+) \|", text, re.M)) | {r["Step"] for r in _docs_rows()}
    steps = _literal_steps() | {"dump", "globals", "manifest"}  # passed on by the pipeline and the atomic writer
    assert steps >= {"connect", "lock", "verify", "copy", "cleanup"}  # the scan finds them
    assert steps - documented == set()


def _raise_messages(path: Path) -> List[str]:
    """The string literals of every ``raise`` statement in a file."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Raise) and node.exc is not None:
            found.extend(n.value for n in ast.walk(node.exc)
                         if isinstance(n, ast.Constant) and isinstance(n.value, str))
    return found


def test_engine_messages_name_no_flag_and_no_command():
    offenders = []
    for path in ENGINE.rglob("*.py"):
        if path.relative_to(ENGINE).parts[0] == "cli":  # the host command may name its own flags
            continue
        for message in _raise_messages(path):
            text = re.sub(r"pg_\w+ --[\w-]+", "", message)  # a client tool's own option (pg_restore --list)
            if re.search(r"(?<![\w-])--[a-z]", text) or COMMAND.search(text) or "module's" in text:
                offenders.append("%s: %s" % (path.relative_to(ENGINE), message))
    assert offenders == []


def _module_hints() -> Dict[str, str]:
    tree = ast.parse(COMMON.read_text(encoding="utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["MODULE_HINTS"]:
            return ast.literal_eval(node.value)
    raise AssertionError("MODULE_HINTS not found in plugins/module_utils/common.py")


def test_every_front_end_renders_every_hint():
    module_hints = _module_hints()
    assert set(CLI_HINTS) == set(HINTS) == set(module_hints)
    for key in HINTS:
        # a module names its options, and a host command only where no module does the job (quoted, "on the host")
        without_host_commands = re.sub(r"'seawall-pgbackup [^']*' on the host", "", module_hints[key])
        assert not re.search(r"(?<![\w-])--[a-z]", without_host_commands), key
    assert "--clean" in CLI_HINTS["replace-target"] and "replace=true" in module_hints["replace-target"]


def test_render_adds_the_front_ends_words():
    exc = NotFound("no backup with id 'x' in /b", hint="list-destination", hint_value="s3")
    assert str(exc) == "no backup with id 'x' in /b"
    assert render(exc, CLI_HINTS) == "no backup with id 'x' in /b (see 'seawall-pgbackup list --destination s3')"
    assert render(exc, {}) == str(exc)
    assert render(BackupError("plain"), CLI_HINTS) == "plain"


def test_every_hint_given_is_known_and_used():
    given = set()
    for path in ENGINE.rglob("*.py"):
        raises = [n for n in ast.walk(ast.parse(path.read_text(encoding="utf-8"))) if isinstance(n, ast.Raise)]
        for node in (k for r in raises for k in ast.walk(r)):
            if isinstance(node, ast.keyword) and node.arg == "hint":
                values = [node.value] if isinstance(node.value, ast.Constant) else \
                    [n for n in ast.walk(node.value) if isinstance(n, ast.Constant)]
                given.update(v.value for v in values if isinstance(v.value, str))
    assert given == set(HINTS)


def test_exit_codes_and_steps_of_raised_errors():
    assert exit_code_of(KeyboardInterrupt()) == 130
    assert exit_code_of(KeyMissing("k")) == 12 and isinstance(KeyMissing("k"), ConfigError)
    assert BackupError("x", step="dump").step == "dump" and BackupError("x").step == "backup"
    full = file_error("cannot write f: no space left on device", OSError(errno.ENOSPC, "full"), "dump")
    assert full.__class__ is ResourceError and full.step == "space" and full.exit_code == 11
    denied = file_error("cannot write f", OSError(errno.EACCES, "denied"), "dump")
    assert denied.__class__ is BackupError and denied.step == "dump" and denied.exit_code == 3


def test_cli_exits_with_the_kind_and_renders_its_hint(tmp_path, capsys, monkeypatch):
    for name in ("DATABASE_URL", "BACKUP_CONFIG", "BACKUP_DIR", "BACKUP_TYPE"):
        monkeypatch.delenv(name, raising=False)
    assert main(["--backup-dir", str(tmp_path), "restore", "nope"]) == NotFound.exit_code
    assert capsys.readouterr().err == ("seawall-pgbackup: error: no backup with id 'nope' in %s (see 'seawall-pgbackup "
                                       "list')\n" % tmp_path)
    assert main(["--backup-dir", str(tmp_path), "create", "--type", "weekly"]) == ConfigError.exit_code
    assert "type='weekly' is not valid" in capsys.readouterr().err
    with pytest.raises(SystemExit) as usage:
        main(["no-such-command"])
    assert usage.value.code == 2


def test_an_unexpected_exception_is_one_line_and_the_internal_code(tmp_path, capsys, monkeypatch):
    from seawall_pgbackup.cli import main as cli_main
    from seawall_pgbackup.core.errors import InternalError

    for name in ("DATABASE_URL", "BACKUP_CONFIG", "BACKUP_DIR", "BACKUP_TYPE", "SEAWALL_DEBUG"):
        monkeypatch.delenv(name, raising=False)

    def broken(cfg, args):
        raise TypeError("postgresql://u:s3cret@h/db is not a str")

    monkeypatch.setitem(cli_main.COMMANDS, "cleanup", broken)
    assert main(["--backup-dir", str(tmp_path), "cleanup"]) == InternalError.exit_code == 70
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "internal error (TypeError at test_errors.py:" in err, err
    assert "s3cret" not in err and "Traceback" not in err
    with open(tmp_path / "logs" / "last-run-cleanup.json", encoding="utf-8") as handle:
        record = json.load(handle)  # the run hook recorded the failure: no run left "running" forever
    assert (record["status"], record["step"], record["exit_code"]) == ("failed", "internal", 70), record
    monkeypatch.setenv("SEAWALL_DEBUG", "1")
    assert main(["--backup-dir", str(tmp_path), "cleanup"]) == 70
    assert "Traceback" in capsys.readouterr().err


def test_an_unreadable_config_file_is_a_config_error(tmp_path, capsys, monkeypatch):
    for name in ("DATABASE_URL", "BACKUP_CONFIG", "BACKUP_DIR", "BACKUP_TYPE"):
        monkeypatch.delenv(name, raising=False)
    binary = tmp_path / "config.json"
    binary.write_bytes(b"\xff\xfe{}")
    for path, message in ((binary, "is not valid UTF-8"), (tmp_path, "Is a directory")):
        assert main(["--backup-dir", str(tmp_path / "b"), "--config", str(path), "list"]) == ConfigError.exit_code
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and message in err, err
