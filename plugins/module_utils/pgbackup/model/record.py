# -*- coding: utf-8 -*-
# Copyright: seawall.pgbackup contributors
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Strict parsing of the JSON records the engine writes and reads back.

A record (manifest, run record, drill report) is a dataclass whose field types say what its JSON holds:
``str``, ``int``, ``float``, ``bool``, ``datetime`` (an ISO string in JSON), ``Optional[...]``,
``List[...]``, ``Dict[str, ...]``, ``Any`` and nested records. ``from_dict`` checks every field once;
a wrong document raises the record's error naming the file and the field, never a KeyError later.

The JSON shape survives a round trip: unknown keys are kept in ``extra`` (a newer writer's fields are
not lost on save), and a key the document did not have is not added unless code set it.
"""

from __future__ import annotations

import dataclasses
import re
from datetime import datetime
from typing import (Any, Callable, ClassVar, Dict, FrozenSet, List, Optional, Tuple, Type, TypeVar, Union, get_args,
                    get_origin, get_type_hints)

from ..core.clock import iso, parse_iso
from ..core.errors import BackupError

R = TypeVar("R", bound="Record")
Fail = Callable[[str], BackupError]
_NO_DEFAULT = object()
_CANONICAL = re.compile(r"^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\.[0-9]{6}Z$")
_INTERNAL = ("extra", "present")
_JSON_NAMES = {bool: "a boolean", int: "an integer", float: "a number", str: "a string", datetime: "an ISO time string"}


class RecordError(BackupError):
    """A record the engine cannot trust: unreadable, of an unknown format, or with a wrong field."""

    step = "record"


def type_name(value: Any) -> str:
    if value is None:
        return "null"
    return {bool: "boolean", int: "integer", float: "number", str: "string", list: "list",
            dict: "object"}.get(type(value), type(value).__name__)


class Record:
    """Base of the typed records. Subclasses are dataclasses ending with ``extra`` and ``present`` fields.

    ``REQUIRED``: JSON keys that must be present. ``OPTIONAL``: keys a record built in code writes only when
    they differ from their default (every other field is always written, null included).
    ``KEYS``: attribute -> JSON key where they differ (``kind`` is written as ``type``).
    """

    REQUIRED: ClassVar[FrozenSet[str]] = frozenset()
    OPTIONAL: ClassVar[FrozenSet[str]] = frozenset()
    KEYS: ClassVar[Dict[str, str]] = {}
    ERROR: ClassVar[Type[RecordError]] = RecordError
    LABEL: ClassVar[str] = "record"

    extra: Dict[str, Any]
    present: Optional[FrozenSet[str]]

    # ------------------------------------------------------------------ parsing
    @classmethod
    def from_dict(cls: Type[R], document: Any, source: str = "") -> R:
        """Parse and validate ``document``; raises ``cls.ERROR`` naming ``source`` (a path) and the field."""
        label = source or cls.LABEL

        def fail(message: str) -> BackupError:
            return cls.ERROR("%s: %s" % (label, message))

        return cls.parse(document, "", fail)

    @classmethod
    def parse(cls: Type[R], document: Any, where: str, fail: Fail) -> R:
        if not isinstance(document, dict):
            raise fail("%s must be an object, not %s" % (where or cls.LABEL, type_name(document)))
        values: Dict[str, Any] = {}
        known = set()
        for spec, hint in _fields(cls):
            key = cls.KEYS.get(spec.name, spec.name)
            known.add(key)
            path = where + "." + key if where else key
            if key not in document:
                if key in cls.REQUIRED:
                    raise fail("%s is missing" % path)
                continue
            values[spec.name] = convert(document[key], hint, path, fail)
        extra = {k: v for k, v in document.items() if k not in known}
        record = cls(extra=extra, present=frozenset(k for k in document if k in known), **values)  # type: ignore
        record.check(where, fail)
        return record

    def check(self, where: str, fail: Fail) -> None:
        """Rules beyond types (names, ranges); raise ``fail(message)``."""

    # ------------------------------------------------------------------ writing
    def to_dict(self) -> Dict[str, Any]:
        """The JSON document: every known field (see OPTIONAL) plus the unknown keys read."""
        document: Dict[str, Any] = dict(self.extra)
        for spec, _hint in _fields(type(self)):
            key = self.KEYS.get(spec.name, spec.name)
            value = getattr(self, spec.name)
            if self.present is not None:
                wanted = key in self.present or value != _default(spec)
            else:
                wanted = key not in self.OPTIONAL or value != _default(spec)
            if wanted:
                document[key] = dump(value)
        return document


def _default(spec: dataclasses.Field) -> Any:
    if spec.default is not dataclasses.MISSING:
        return spec.default
    if spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
        return spec.default_factory()  # type: ignore[misc]
    return _NO_DEFAULT


_HINTS: Dict[type, List[Tuple[dataclasses.Field, Any]]] = {}


def _fields(cls: type) -> List[Tuple[dataclasses.Field, Any]]:
    """The data fields of a record class with their resolved types (cached: 10,000 manifests share them)."""
    found = _HINTS.get(cls)
    if found is None:
        hints = get_type_hints(cls)
        found = [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in _INTERNAL]
        _HINTS[cls] = found
    return found


def convert(value: Any, hint: Any, path: str, fail: Fail) -> Any:
    """``value`` checked against ``hint``; records are parsed, ISO strings become datetimes."""
    origin = get_origin(hint)
    if hint is Any:
        return value
    if origin is Union:
        if value is None:
            return None
        inner = [a for a in get_args(hint) if a is not type(None)]
        return convert(value, inner[0], path, fail)
    if origin is list:
        if not isinstance(value, list):
            raise fail("%s must be a list, not %s" % (path, type_name(value)))
        return [convert(item, get_args(hint)[0], "%s[%d]" % (path, i), fail) for i, item in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise fail("%s must be an object, not %s" % (path, type_name(value)))
        return {k: convert(v, get_args(hint)[1], "%s.%s" % (path, k), fail) for k, v in value.items()}
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.parse(value, path, fail)
    if hint is datetime:
        if not isinstance(value, str):
            raise fail("%s must be an ISO time string, not %s" % (path, type_name(value)))
        try:
            if _CANONICAL.match(value):  # what iso() writes: the fast path (10,000 manifests in a listing)
                return datetime.fromisoformat(value[:-1] + "+00:00")
            return parse_iso(value)
        except ValueError:
            raise fail("%s is not a time of the form 2026-11-26T02:00:00.000000Z: %r" % (path, value[:40])) from None
    ok = {bool: isinstance(value, bool),
          int: isinstance(value, int) and not isinstance(value, bool),
          float: isinstance(value, (int, float)) and not isinstance(value, bool),
          str: isinstance(value, str)}.get(hint)
    if ok is None:
        raise TypeError("record field type %r is not supported" % (hint,))
    if not ok:
        raise fail("%s must be %s, not %s" % (path, _JSON_NAMES[hint], type_name(value)))
    return value


def dump(value: Any) -> Any:
    """The JSON value of a field (the inverse of ``convert``)."""
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return iso(value)
    if isinstance(value, list):
        return [dump(v) for v in value]
    if isinstance(value, dict):
        return {k: dump(v) for k, v in value.items()}
    return value


__all__ = ["Record", "RecordError", "convert", "dump", "type_name"]
