"""Constrained field types and the normalisation every operation shares."""

from __future__ import annotations

import operator
import time
from typing import Annotated, Any, ClassVar, Union

import msgspec

from ..timestamps import SECONDS_BELOW, normalize_timestamp
from ..values import clean_value

__all__ = [
    "Name",
    "Text",
    "LongText",
    "Count",
    "Real",
    "Unit",
    "Money",
    "JsonText",
    "Timestamp",
    "vocabulary",
    "scale",
    "OpBase",
    "normalize_timestamp",
    "TEXT_MAX",
    "NAME_MAX",
    "COUNT_MAX",
    "LONG_TEXT_MAX",
    "type_members",
    "settled_type",
    "unsettled",
]

TEXT_MAX = 64 * 1024
NAME_MAX = 200
COUNT_MAX = 2**53  # what a JSON number holds exactly
LONG_TEXT_MAX = 1024 * 1024

Name = Annotated[str, msgspec.Meta(min_length=1, max_length=NAME_MAX)]
Text = Annotated[str, msgspec.Meta(max_length=TEXT_MAX)]
LongText = Annotated[str, msgspec.Meta(max_length=LONG_TEXT_MAX)]
Count = Annotated[int, msgspec.Meta(ge=0, le=COUNT_MAX)]
# Bounded so NaN and infinities fail validation (SQLite would store NaN as NULL).
Real = Annotated[float, msgspec.Meta(ge=-1e15, le=1e15)]
Unit = Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
Money = Annotated[float, msgspec.Meta(ge=0.0, le=1e9)]


def vocabulary(*values: str) -> msgspec.Meta:
    """``Annotated[str, vocabulary(...)]``: text whose known values are ``values``. Refused
    otherwise at the API and CLI (the generated schema's ``enum``), but stored as given from
    the platform's own files, whose writers use words of their own (``completed``, ``warning``…)."""
    return msgspec.Meta(min_length=1, max_length=NAME_MAX, extra_json_schema={"enum": list(values), "x-vocabulary": True})


def scale(low: float, high: float) -> msgspec.Meta:
    """``Annotated[float, scale(...)]``: a number our producers send in ``[low, high]`` (checked at
    the API and CLI), stored as given from the platform's files, which use other scales."""
    return msgspec.Meta(ge=-1e15, le=1e15, extra_json_schema={"x-scale": [low, high]})


# Free-form JSON stored as TEXT: producers may pass a string or a structure.
JsonText = Union[Text, dict[str, Any], list[Any], None]
Timestamp = Union[int, float, str, None]


def _json_text(value: Any) -> str:
    """Free-form JSON as text under the value rules: bad text replaced, non-finite numbers
    kept as their literal text (msgspec alone would write null for them)."""
    try:
        data = msgspec.json.encode(value)
    except UnicodeEncodeError:
        data = b"null"  # unpaired surrogates: cleaned below
    if b"null" in data:
        data = msgspec.json.encode(clean_value(value))
    return data.decode()


class OpBase(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, tag_field="op"):
    """Fields and normalisation every operation shares.

    Structs evolve by adding fields with defaults only; a field is never
    renamed, retyped or removed (old spool records must still decode).
    """

    timestamp: Timestamp = None

    # Names of JsonText fields, serialised to JSON text once, at enqueue.
    __json_fields__: ClassVar[tuple[str, ...]] = ()
    # Text that stays on the developer's machine unless ``[sync] share_private`` (docs/team.md).
    __private_fields__: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self) -> None:
        # Errors are phrased like msgspec's own ("... - at `$.field`") so one
        # parser turns both into (field, reason).
        ts = self.timestamp
        # Whole seconds already (every body a producer normalised): nothing to do. The
        # consumer decodes every body again, so this test is on the drain's hot path.
        if not (type(ts) is int and 0 <= ts < SECONDS_BELOW):
            try:
                self.timestamp = int(time.time()) if ts is None else normalize_timestamp(ts)
            except ValueError as exc:
                raise ValueError(f"{exc} - at `$.timestamp`") from None
        for name in self.__json_fields__:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                text = _json_text(value)
                if len(text) > TEXT_MAX:
                    raise ValueError(f"JSON longer than {TEXT_MAX} characters - at `$.{name}`")
                setattr(self, name, text)


def settled_type(cls: type[OpBase]) -> type:
    """``cls`` without ``__post_init__``, generated from its fields (the same fields, types,
    defaults, tag and JSON schema): what the consumer decodes bodies into, since nearly every
    body was normalised by its producer already and the hook is one Python call per operation.
    ``unsettled`` says which decoded bodies still need it (decode those as ``cls``)."""
    twin = _settled.get(cls)
    if twin is None:
        conf = cls.__struct_config__
        fields: list[Any] = []
        for f in msgspec.structs.fields(cls):
            if f.default is not msgspec.NODEFAULT:
                fields.append((f.name, f.type, f.default))
            elif f.default_factory is not msgspec.NODEFAULT:
                fields.append((f.name, f.type, msgspec.field(default_factory=f.default_factory)))
            else:
                fields.append((f.name, f.type))
        twin = _settled[cls] = msgspec.defstruct(
            cls.__name__, fields, kw_only=True, forbid_unknown_fields=conf.forbid_unknown_fields,
            tag_field=conf.tag_field, tag=conf.tag, gc=False, module=cls.__module__)
    return twin


_settled: dict[type, type] = {}


def unsettled(cls: type[OpBase], items: list[Any]) -> list[int]:
    """Which of ``items`` (decoded as ``settled_type(cls)``) ``OpBase.__post_init__`` would
    change or refuse: a timestamp that is not whole seconds yet, JSON not yet text."""
    if not items:
        return []
    # Whole-list checks in C first: a batch of settled bodies costs no Python per body.
    stamps = list(map(_TIMESTAMP, items))
    odd: set[int] = set()
    if set(map(type, stamps)) != {int} or min(stamps) < 0 or max(stamps) >= SECONDS_BELOW:
        odd.update(i for i, ts in enumerate(stamps) if not (type(ts) is int and 0 <= ts < SECONDS_BELOW))
    for name in cls.__json_fields__:
        values = list(map(operator.attrgetter(name), items))
        if not set(map(type, values)) <= _TEXT_OR_NONE:
            odd.update(i for i, v in enumerate(values) if v is not None and not isinstance(v, str))
    return sorted(odd)


_TEXT_OR_NONE = {str, type(None)}
_TIMESTAMP = operator.attrgetter("timestamp")


def type_members(info: Any) -> list[Any]:
    """The plain types a field's ``msgspec.inspect`` type stands for: metadata unwrapped, unions flattened."""
    if isinstance(info, msgspec.inspect.Metadata):
        return type_members(info.type)
    if isinstance(info, msgspec.inspect.UnionType):
        return [m for t in info.types for m in type_members(t)]
    return [info]
