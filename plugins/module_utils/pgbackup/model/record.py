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
Convert = Callable[[Any, str, Fail], Any]
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
        """Parse a nested document; ``where`` is its path in the outer one (``files[0]``)."""
        return _layout(cls).parse(document, where, fail)

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
_LAYOUTS: Dict[type, "_Layout"] = {}


class _Layout:
    """How to parse one record class, worked out once: per field (attribute, JSON key, the JSON types taken
    as they are or None, the checking function, required), the known keys and the defaults; and from these
    a parsing function written out for the class (a listing parses 10,000 manifests: no loop per field)."""

    def __init__(self, cls: Any) -> None:
        self.table: List[Tuple[str, str, Optional[Tuple[type, ...]], Convert, bool]] = []
        self.defaults: Dict[str, Any] = {}
        self.factories: List[Tuple[str, Callable[[], Any]]] = []
        for spec, hint in _fields(cls):
            key = cls.KEYS.get(spec.name, spec.name)
            self.table.append((spec.name, key, _scalar_types(hint), converter(hint), key in cls.REQUIRED))
            if spec.default is not dataclasses.MISSING:
                self.defaults[spec.name] = spec.default
            elif spec.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
                self.factories.append((spec.name, spec.default_factory))  # type: ignore[misc]
        self.known = frozenset(key for _name, key, _types, _check, _required in self.table)
        self.parse: Callable[[Any, str, Fail], Any] = self._compile(cls)

    def _compile(self, cls: Any) -> Callable[[Any, str, Fail], Any]:
        scope: Dict[str, Any] = {"cls": cls, "new": object.__new__, "MISSING": _NO_DEFAULT, "type_name": type_name,
                                 "defaults": self.defaults, "known": self.known, "frozenset": frozenset,
                                 "dict": dict, "type": type}
        lines = ["def parse(document, where, fail):",
                 "    if type(document) is not dict:",
                 "        raise fail('%s must be an object, not %s' % (where or cls.LABEL, type_name(document)))",
                 "    prefix = where + '.' if where else ''",
                 "    get = document.get",
                 "    record = new(cls)",
                 "    values = record.__dict__",
                 "    values.update(defaults)"]
        for index, (name, factory) in enumerate(self.factories):
            scope["factory%d" % index] = factory
            lines.append("    values[%r] = factory%d()" % (name, index))
        for index, (name, key, scalars, check, required) in enumerate(self.table):
            scope["check%d" % index] = check
            scope["scalars%d" % index] = scalars
            lines.append("    value = get(%r, MISSING)" % key)
            lines.append("    if value is MISSING:")
            lines.append("        raise fail('%%s is missing' %% (prefix + %r))" % key if required else "        pass")
            if scalars is not None:
                lines.append("    elif type(value) in scalars%d:" % index)
                lines.append("        values[%r] = value" % name)
            lines.append("    else:")
            lines.append("        values[%r] = check%d(value, prefix + %r, fail)" % (name, index, key))
        lines += ["    if document.keys() <= known:",
                  "        values['extra'] = {}",
                  "        values['present'] = frozenset(document)",
                  "    else:",
                  "        values['extra'] = {k: v for k, v in document.items() if k not in known}",
                  "        values['present'] = frozenset(k for k in document if k in known)",
                  "    record.check(where, fail)",
                  "    return record"]
        exec("\n".join(lines), scope)  # pylint: disable=exec-used  # source built above from field names only
        return scope["parse"]


def _layout(cls: Any) -> _Layout:
    found = _LAYOUTS.get(cls)
    if found is None:
        found = _LAYOUTS[cls] = _Layout(cls)
    return found


def _scalar_types(hint: Any) -> Optional[Tuple[type, ...]]:
    """The JSON types a scalar field (``str``, ``Optional[int]``...) takes as they are; None for the others."""
    if hint in _SCALARS:
        return _SCALARS[hint]
    if get_origin(hint) is Union:
        inner = [a for a in get_args(hint) if a is not type(None)]
        if len(inner) == 1 and inner[0] in _SCALARS:
            return _SCALARS[inner[0]] + (type(None),)
    return None


def _fields(cls: type) -> List[Tuple[dataclasses.Field, Any]]:
    """The data fields of a record class with their resolved types (cached: 10,000 manifests share them)."""
    found = _HINTS.get(cls)
    if found is None:
        hints = get_type_hints(cls)
        found = [(f, hints[f.name]) for f in dataclasses.fields(cls) if f.name not in _INTERNAL]
        _HINTS[cls] = found
    return found


_CONVERTERS: Dict[Any, Convert] = {}
_SCALARS = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}


def convert(value: Any, hint: Any, path: str, fail: Fail) -> Any:
    """``value`` checked against ``hint``; records are parsed, ISO strings become datetimes."""
    return converter(hint)(value, path, fail)


def converter(hint: Any) -> Convert:
    """The checking function for one field type, built once (10,000 manifests in a listing share them)."""
    found = _CONVERTERS.get(hint)
    if found is None:
        found = _CONVERTERS[hint] = _build(hint)
    return found


def _build(hint: Any) -> Convert:  # pylint: disable=too-many-return-statements
    origin = get_origin(hint)
    if hint is Any:
        return lambda value, path, fail: value
    if origin is Union:
        inner = converter([a for a in get_args(hint) if a is not type(None)][0])
        return lambda value, path, fail: None if value is None else inner(value, path, fail)
    if origin is list:
        item = converter(get_args(hint)[0])
        plain = _SCALARS.get(get_args(hint)[0])

        def as_list(value: Any, path: str, fail: Fail) -> Any:
            if type(value) is not list:  # pylint: disable=unidiomatic-typecheck  # JSON: exact types
                raise fail("%s must be a list, not %s" % (path, type_name(value)))
            if plain is not None and all(type(v) in plain for v in value):
                return list(value)
            return [item(v, "%s[%d]" % (path, i), fail) for i, v in enumerate(value)]
        return as_list
    if origin is dict:
        member = converter(get_args(hint)[1])
        plain = _SCALARS.get(get_args(hint)[1])

        def as_dict(value: Any, path: str, fail: Fail) -> Any:
            if type(value) is not dict:  # pylint: disable=unidiomatic-typecheck
                raise fail("%s must be an object, not %s" % (path, type_name(value)))
            if plain is not None and all(type(v) in plain for v in value.values()):
                return dict(value)
            return {k: member(v, "%s.%s" % (path, k), fail) for k, v in value.items()}
        return as_dict
    if isinstance(hint, type) and issubclass(hint, Record):
        return hint.parse
    if hint is datetime:
        return _as_datetime
    if hint not in _SCALARS:
        raise TypeError("record field type %r is not supported" % (hint,))
    allowed = _SCALARS[hint]

    def as_scalar(value: Any, path: str, fail: Fail) -> Any:
        if type(value) not in allowed:  # bool is no int here, as in JSON
            raise fail("%s must be %s, not %s" % (path, _JSON_NAMES[hint], type_name(value)))
        return value
    return as_scalar


def _as_datetime(value: Any, path: str, fail: Fail) -> datetime:
    if type(value) is not str:  # pylint: disable=unidiomatic-typecheck
        raise fail("%s must be an ISO time string, not %s" % (path, type_name(value)))
    try:
        if _CANONICAL.match(value):  # what iso() writes: the fast path
            return datetime.fromisoformat(value[:-1] + "+00:00")
        return parse_iso(value)
    except ValueError:
        raise fail("%s is not a time of the form 2026-11-26T02:00:00.000000Z: %r" % (path, value[:40])) from None


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
