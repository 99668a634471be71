"""OTLP trace encoding by hand: ``ExportTraceServiceRequest`` bytes without protobuf objects.

The stock exporter builds one protobuf object per span, attribute, value, event and status
(``opentelemetry.exporter.otlp.proto.common.trace_encoder.encode_spans``), then serializes
them; that is the largest CPU cost of an exported span. :func:`encode_spans_fast` writes the
same wire format directly (varints, length-delimited fields, in field-number order, proto3
defaults left out exactly as the stock encoder leaves them out), so a receiver, and
``ExportTraceServiceRequest.FromString``, sees the same message; the tests check it byte for
byte against the stock encoder. It caches the encoded bytes of repeated attribute keys and of
each Resource and InstrumentationScope, and reads the fields of a plain ``ReadableSpan`` (what
the SDK hands to processors) directly when a probe at import shows the SDK keeps them where
expected; other span classes are read through their public properties.

Behaviour kept from the stock encoder: spans grouped by resource then scope (by equality, in
order of first appearance); ``None`` attribute values become an empty ``AnyValue``; an
attribute whose value cannot be encoded (wrong type, int outside int64, unencodable text) is
logged and left out; span ``flags`` carry only the ``HAS_IS_REMOTE``/``IS_REMOTE`` bits;
links carry no ``trace_state``.

:class:`FastOTLPSpanExporter` is the stock OTLP/HTTP protobuf exporter with this encoder.
"""

from __future__ import annotations

import logging
import struct
from collections.abc import Callable, Mapping, Sequence
from operator import index
from typing import Any

from opentelemetry.attributes import BoundedAttributes
from opentelemetry.exporter.otlp.proto.http import trace_exporter as _http_exporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export import SpanExportResult
from opentelemetry.sdk.util import BoundedList
from opentelemetry.trace import SpanContext, SpanKind
from opentelemetry.trace.status import StatusCode

from flowtrace_otel import _settings

__all__ = ["FAST_EXPORT_ENV", "OUR_SCOPE", "FastOTLPSpanExporter", "encode_spans_fast",
           "fast_export_enabled", "http_export", "is_ours", "stock_span_bytes"]

_logger = logging.getLogger(__name__)

#: ``FLOWTRACE_OTEL_FAST_EXPORT=0`` makes the pipeline use the stock encoder.
FAST_EXPORT_ENV = "FLOWTRACE_OTEL_FAST_EXPORT"

_MASK64 = (1 << 64) - 1
_INT64_MIN = -(1 << 63)
_INT64_MAX = (1 << 63) - 1
_pack_fixed64 = struct.Struct("<Q").pack
_pack_double = struct.Struct("<d").pack


def _varint(value: int) -> bytes:
    """A non-negative int as a protobuf varint."""
    out = bytearray()
    while value > 0x7F:
        out.append((value & 0x7F) | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


#: varints of small lengths, looked up instead of computed (about 70 KB)
_VN = 2048
_V = [_varint(n) for n in range(_VN)]

# tags: (field number << 3) | wire type; 0 varint, 1 fixed64, 2 length-delimited, 5 fixed32
_SPAN_TRACE_ID = b"\x0a\x10"  # 1: bytes(16)
_SPAN_SPAN_ID = b"\x12\x08"  # 2: bytes(8)
_SPAN_TRACE_STATE = b"\x1a"  # 3
_SPAN_PARENT = b"\x22\x08"  # 4: bytes(8)
_SPAN_NAME = b"\x2a"  # 5
_SPAN_START = b"\x39"  # 7: fixed64
_SPAN_END = b"\x41"  # 8: fixed64
_SPAN_ATTR = b"\x4a"  # 9
_SPAN_DROPPED_ATTRS = b"\x50"  # 10
_SPAN_EVENT = b"\x5a"  # 11
_SPAN_DROPPED_EVENTS = b"\x60"  # 12
_SPAN_LINK = b"\x6a"  # 13
_SPAN_DROPPED_LINKS = b"\x70"  # 14
_SPAN_STATUS = b"\x7a"  # 15
# 16: flags, fixed32: SPAN_FLAGS_CONTEXT_HAS_IS_REMOTE (0x100) [| CONTEXT_IS_REMOTE (0x200)]
_FLAGS_LOCAL = b"\x85\x01" + struct.pack("<I", 0x100)
_FLAGS_REMOTE = b"\x85\x01" + struct.pack("<I", 0x300)
_LINK_FLAGS_LOCAL = b"\x35" + struct.pack("<I", 0x100)  # Link 6: flags
_LINK_FLAGS_REMOTE = b"\x35" + struct.pack("<I", 0x300)
_KIND = {kind: bytes((0x30, kind.value + 1)) for kind in SpanKind}  # 6: SDK value + 1
_INTERNAL = SpanKind.INTERNAL  # enum members hash in Python: test the usual one by identity
_KIND_INTERNAL = _KIND[_INTERNAL]
_UNSET = StatusCode.UNSET
_STATUS_EMPTY = b"\x7a\x00"  # the stock encoder always sends a status, even UNSET

_ANY_NONE = b""
_ANY_TRUE = b"\x10\x01"  # AnyValue 2: bool_value
_ANY_FALSE = b"\x10\x00"

#: per attribute tag, attribute key -> its prefixes (see ``_key_entry``); cleared when full
_KEYS: dict[bytes, dict[str, list[Any]]] = {}
_KEYS_MAX = 512  # worst case ~5 MB per tag: 512 keys x 126 string sizes, typically < 1 MB
#: ints of at most 64 bits that are not small (thread ids, ...) -> their varint
_INTS: dict[int, bytes] = {}
_INTS_MAX = 1024
#: in a key entry: index of the key field, and of the int prefixes by varint length (1..10)
_INT_AT = 126
#: id(resource or scope) -> (the object, its encoded message); identity checked
_OBJECTS: dict[int, tuple[Any, bytes]] = {}
_OBJECTS_MAX = 64


def _vlen(size: int) -> bytes:
    """The varint of a length."""
    return _V[size] if size < _VN else _varint(size)


def _ld(tag: bytes, body: bytes) -> bytes:
    """A length-delimited field."""
    size = len(body)
    return tag + (_V[size] if size < _VN else _varint(size)) + body


def _any_value(value: Any) -> bytes:
    """The body of an ``AnyValue`` (the stock ``_encode_value`` rules, in its order)."""
    if value is None:
        return _ANY_NONE
    if isinstance(value, bool):
        return _ANY_TRUE if value else _ANY_FALSE
    if isinstance(value, str):
        return _ld(b"\x0a", str.encode(value))
    if isinstance(value, int):
        number = index(value)
        if not _INT64_MIN <= number <= _INT64_MAX:
            raise ValueError(f"Value out of range: {number}")
        return b"\x18" + (_V[number] if 0 <= number < _VN else _varint(number & _MASK64))
    if isinstance(value, float):
        return b"\x21" + _pack_double(value)
    if isinstance(value, bytes):
        return _ld(b"\x3a", value)
    if isinstance(value, Sequence):
        return _ld(b"\x2a", b"".join([_ld(b"\x0a", _any_value(item)) for item in value]))
    if isinstance(value, Mapping):
        return _ld(b"\x32", b"".join([_ld(b"\x0a", _key_value(str(k), v))
                                      for k, v in value.items()]))
    raise TypeError(f"Invalid type {type(value)} of value {value}")


def _key_field(key: str) -> bytes:
    """The ``KeyValue.key`` field of a key (nothing for ``""``, a proto3 default)."""
    if type(key) is not str:
        raise TypeError(f"attribute key {key!r} is not a str")
    return _ld(b"\x0a", key.encode()) if key else b""


def _key_value(key: str, value: Any) -> bytes:
    """The body of a ``KeyValue``."""
    return _key_field(key) + _ld(b"\x12", _any_value(value))


def _key_entry(tag: bytes, keys: dict[str, list[Any]], key: str) -> list[Any]:
    """The cached prefixes of ``key`` in fields tagged ``tag``.

    Entry ``[n]`` for ``n < 126`` (filled on first use): everything of the attribute field
    before the UTF-8 bytes of an ``n``-byte string value; ``[126 + k]``: everything before the
    ``k``-byte varint of an int value; ``[137]``: the ``KeyValue.key`` field.
    """
    field = _key_field(key)
    entry: list[Any] = [None] * (_INT_AT + 12)
    for size in range(1, 11):  # tag, KeyValue length, key, 0x12, AnyValue length, 0x18
        entry[_INT_AT + size] = (tag + _vlen(len(field) + 3 + size) + field
                                 + b"\x12" + _V[1 + size] + b"\x18")
    entry[_INT_AT + 11] = field
    if len(keys) >= _KEYS_MAX:
        keys.clear()
    keys[key] = entry
    return entry


def _str_prefix(tag: bytes, entry: list[Any], size: int) -> bytes:
    """Entry ``[size]`` of a key: the field up to a ``size``-byte string value (< 126)."""
    field = entry[_INT_AT + 11]
    prefix: bytes = (tag + _vlen(len(field) + 4 + size) + field
                     + b"\x12" + _V[2 + size] + b"\x0a" + _V[size])
    entry[size] = prefix
    return prefix


def _int_varint(value: int) -> bytes:
    """The varint of an int64 value (cached), or ``ValueError`` as protobuf says."""
    if not _INT64_MIN <= value <= _INT64_MAX:
        raise ValueError(f"Value out of range: {value}")
    encoded = _varint(value & _MASK64)
    if len(_INTS) >= _INTS_MAX:
        _INTS.clear()
    _INTS[value] = encoded
    return encoded


def _attributes(tag: bytes, attributes: Mapping[str, Any] | None) -> list[bytes]:
    """Repeated ``KeyValue`` fields; values that cannot be encoded are logged and skipped."""
    out: list[bytes] = []
    if not attributes:
        return out
    append = out.append
    keys = _KEYS.get(tag)
    if keys is None:
        keys = _KEYS[tag] = {}
    ints = _INTS
    for key, value in attributes.items():
        try:
            entry = keys.get(key)
            if entry is None:
                entry = _key_entry(tag, keys, key)
            kind = type(value)
            # the common cases with one concatenation: short str values, int values
            if kind is str:
                text = value.encode()
                size = len(text)
                if size < 126:
                    prefix = entry[size]
                    if prefix is None:
                        prefix = _str_prefix(tag, entry, size)
                    append(prefix + text)
                    continue
            elif kind is int:
                if 0 <= value < _VN:
                    number = _V[value]
                else:
                    number = ints.get(value)
                    if number is None:
                        number = _int_varint(value)
                append(entry[_INT_AT + len(number)] + number)
                continue
            body = entry[_INT_AT + 11] + _ld(b"\x12", _any_value(value))
        except Exception as error:  # the stock encoder's rule: log, skip the attribute
            _logger.exception("Failed to encode key %s: %s", key, error)
            continue
        size = len(body)
        append(tag + (_V[size] if size < _VN else _varint(size)) + body)
    return out


def _cached(obj: Any, encode: Any) -> bytes:
    """The encoded message of a resource or scope, cached by identity."""
    entry = _OBJECTS.get(id(obj))
    if entry is not None and entry[0] is obj:
        return entry[1]
    encoded: bytes = encode(obj)
    if len(_OBJECTS) >= _OBJECTS_MAX:
        _OBJECTS.clear()
    _OBJECTS[id(obj)] = (obj, encoded)
    return encoded


def _resource(resource: Any) -> bytes:
    """A ``Resource`` message: its attributes (the stock encoder sends nothing else)."""
    return b"".join(_attributes(b"\x0a", resource.attributes))


def _scope(scope: Any) -> bytes:
    """An ``InstrumentationScope`` message: name, version, attributes."""
    if scope is None:
        return b""
    parts = []
    if scope.name:
        parts.append(_ld(b"\x0a", scope.name.encode()))
    if scope.version:
        parts.append(_ld(b"\x12", scope.version.encode()))
    parts += _attributes(b"\x1a", scope.attributes)
    return b"".join(parts)


def _event(event: Any) -> bytes:
    """A ``Span.Event`` message."""
    parts = []
    if event.timestamp:
        parts.append(b"\x09" + _pack_fixed64(event.timestamp))
    if event.name:
        parts.append(_ld(b"\x12", event.name.encode()))
    parts += _attributes(b"\x1a", event.attributes)
    if event.dropped_attributes:
        parts.append(b"\x20" + _varint(event.dropped_attributes))
    return b"".join(parts)


def _link(link: Any) -> bytes:
    """A ``Span.Link`` message (no ``trace_state``, as the stock encoder)."""
    context = link.context
    parts = [b"\x0a\x10" + context.trace_id.to_bytes(16, "big"),
             b"\x12\x08" + context.span_id.to_bytes(8, "big")]
    parts += _attributes(b"\x22", link.attributes)
    if link.dropped_attributes:
        parts.append(b"\x28" + _varint(link.dropped_attributes))
    parts.append(_LINK_FLAGS_REMOTE if context.is_remote else _LINK_FLAGS_LOCAL)
    return b"".join(parts)


def _span(span: ReadableSpan) -> bytes:
    """A ``Span`` message."""
    if type(span) is ReadableSpan and _PRIVATE_LAYOUT:
        # what the SDK hands to processors: read its fields, not its properties (a quarter
        # of the time of a span went to them: copies of the events, links and attributes, and
        # ``isinstance`` checks against ABCs for the dropped counts)
        context: Any = span._context
        parent: Any = span._parent
        name = span._name
        kind = span._kind
        start = span._start_time
        end = span._end_time
        attributes: Any = span._attributes
        events: Any = span._events
        links: Any = span._links
        status: Any = span._status
        dropped_attributes = _dropped(attributes, BoundedAttributes)
        dropped_events = _dropped(events, BoundedList)
        dropped_links = _dropped(links, BoundedList)
    else:
        context = span.context
        parent = span.parent
        name = span.name
        kind = span.kind
        start = span.start_time
        end = span.end_time
        attributes = span.attributes
        events = span.events
        links = span.links
        status = span.status
        dropped_attributes = span.dropped_attributes
        dropped_events = span.dropped_events
        dropped_links = span.dropped_links
    parts = [_SPAN_TRACE_ID, context.trace_id.to_bytes(16, "big"),
             _SPAN_SPAN_ID, context.span_id.to_bytes(8, "big")]
    trace_state = context.trace_state
    if trace_state is not None and len(trace_state):
        parts.append(_ld(_SPAN_TRACE_STATE,
                         ",".join([f"{k}={v}" for k, v in trace_state.items()]).encode()))
    if parent:
        parts += (_SPAN_PARENT, parent.span_id.to_bytes(8, "big"))
    if name:
        raw = name.encode()
        size = len(raw)
        parts += (_SPAN_NAME, _V[size] if size < _VN else _varint(size), raw)
    parts.append(_KIND_INTERNAL if kind is _INTERNAL else _KIND[kind])
    if start:
        parts += (_SPAN_START, _pack_fixed64(start))
    if end:
        parts += (_SPAN_END, _pack_fixed64(end))
    parts += _attributes(_SPAN_ATTR, attributes)
    if dropped_attributes:
        parts += (_SPAN_DROPPED_ATTRS, _varint(dropped_attributes))
    if events:
        parts += [_ld(_SPAN_EVENT, _event(event)) for event in events]
    if dropped_events:
        parts += (_SPAN_DROPPED_EVENTS, _varint(dropped_events))
    if links:
        parts += [_ld(_SPAN_LINK, _link(link)) for link in links]
    if dropped_links:
        parts += (_SPAN_DROPPED_LINKS, _varint(dropped_links))
    if status is not None:
        description = status.description
        code_enum = status.status_code
        if not description and code_enum is _UNSET:
            parts.append(_STATUS_EMPTY)
        elif description:
            code = code_enum.value
            body = _ld(b"\x12", description.encode())
            if code:
                body += b"\x18" + _V[code]
            parts.append(_ld(_SPAN_STATUS, body))
        else:
            parts += (_SPAN_STATUS, b"\x02\x18", _V[code_enum.value])
    parts.append(_FLAGS_REMOTE if parent is not None and parent.is_remote else _FLAGS_LOCAL)
    return b"".join(parts)


_PLAIN = frozenset({dict, list, tuple, type(None)})


def _dropped(items: Any, bounded: Any) -> int:
    """What ``ReadableSpan.dropped_*`` says, without an ABC ``isinstance`` for plain containers."""
    if type(items) in _PLAIN or not isinstance(items, bounded):
        return 0
    return int(items.dropped)


def _private_layout() -> bool:
    """Whether ``ReadableSpan`` keeps its fields where ``_span`` reads them (checked once)."""
    context = SpanContext(1, 2, True)
    # an explicit resource: a default one runs the resource detectors in a thread pool, which
    # fails when the exporter is first built at exit (interpreter shutdown)
    probe = ReadableSpan("n", context, context, Resource.get_empty(), {"a": 1}, (), (),
                         SpanKind.SERVER, start_time=3, end_time=4)
    try:
        return bool(probe._context is probe.context and probe._parent is probe.parent
                    and probe._name == probe.name and probe._kind is probe.kind
                    and probe._start_time == probe.start_time == 3
                    and probe._end_time == probe.end_time == 4
                    and dict(probe._attributes or {}) == dict(probe.attributes or {})
                    and tuple(probe._events) == tuple(probe.events)
                    and tuple(probe._links) == tuple(probe.links)
                    and probe._status is probe.status)
    except AttributeError:
        return False


_PRIVATE_LAYOUT = _private_layout()


def _same(a: Any, b: Any) -> bool:
    """Whether two resources (or scopes) fall in one group, as dict keys would."""
    return a is b or (hash(a) == hash(b) and a == b)


#: the instrumentation scope of flowtrace_otel's spans, and the prefix of its other scopes
OUR_SCOPE = "flowtrace_otel"
_OUR_PREFIX = OUR_SCOPE + "."


def is_ours(scope: Any) -> bool:
    """Whether spans of this instrumentation scope are flowtrace_otel's."""
    name = getattr(scope, "name", None) if scope is not None else None
    return type(name) is str and (name == OUR_SCOPE or name.startswith(_OUR_PREFIX))


def encode_spans_fast(spans: Sequence[ReadableSpan],
                      foreign: Callable[[Any], bytes] | None = None) -> bytes:
    """``encode_spans(spans).SerializeToString()``, written directly in the wire format.

    With ``foreign``, only flowtrace_otel's spans (:func:`is_ours`) are encoded here; the
    ``Span`` message of any other span is ``foreign(span)`` (the stock encoder's).
    """
    # groups: [resource, [[scope, [encoded span fields]], ...]], in order of first appearance
    groups: list[list[Any]] = []
    last_resource: Any = None
    last_scope: Any = None
    last_ours = True
    chunks: list[bytes] | None = None
    for span in spans:
        resource = span.resource
        scope = span.instrumentation_scope or None
        if foreign is not None:
            if scope is not last_scope or chunks is None:
                last_ours = is_ours(scope)
            encoded = _span(span) if last_ours else foreign(span)
        else:
            encoded = _span(span)
        size = len(encoded)
        field = b"\x12" + (_V[size] if size < _VN else _varint(size)) + encoded
        if chunks is None or resource is not last_resource or scope is not last_scope:
            chunks = _group(groups, resource, scope)
            last_resource, last_scope = resource, scope
        chunks.append(field)
    out = []
    for resource, scopes in groups:
        body = [_ld(b"\x0a", _cached(resource, _resource))]
        for scope, fields in scopes:
            scope_spans = [_ld(b"\x0a", _cached(scope, _scope) if scope is not None else b"")]
            scope_spans += fields
            schema = scope.schema_url if scope is not None else None
            if schema:
                scope_spans.append(_ld(b"\x1a", schema.encode()))
            body.append(_ld(b"\x12", b"".join(scope_spans)))
        if resource.schema_url:
            body.append(_ld(b"\x1a", resource.schema_url.encode()))
        out.append(_ld(b"\x0a", b"".join(body)))
    return b"".join(out)


def _group(groups: list[list[Any]], resource: Any, scope: Any) -> list[bytes]:
    """The list collecting the spans of one (resource, scope), made on first need."""
    for group in groups:
        if _same(group[0], resource):
            scopes = group[1]
            break
    else:
        scopes = []
        groups.append([resource, scopes])
    for entry in scopes:
        if entry[0] is scope or (scope is not None and entry[0] is not None
                                 and _same(entry[0], scope)):
            return entry[1]  # type: ignore[no-any-return]
    fields: list[bytes] = []
    scopes.append([scope, fields])
    return fields


def fast_export_enabled() -> bool:
    """False when ``FLOWTRACE_OTEL_FAST_EXPORT`` is false (``0``/``false``/``no``/``off``)."""
    enabled: bool = _settings.read(FAST_EXPORT_ENV)
    return enabled


_Base: Any = _http_exporter.OTLPSpanExporter
#: what ``export`` below relies on in the stock exporter (1.4x); if missing, the stock path runs
_STOCK_PARTS = ("_logger", "_is_request_too_large", "RequestPayloadTooLargeError",
                "HTTP_RESPONSE_STATUS_CODE")


class FastOTLPSpanExporter(_Base):  # type: ignore[misc]
    """The stock OTLP/HTTP protobuf span exporter, encoding with :func:`encode_spans_fast`.

    Constructor, environment variables, transport, retries, compression, size limit, metrics
    and shutdown are the stock exporter's; only the encoding step differs. If the installed
    exporter is not laid out as this class expects, ``export`` is the stock one.
    """

    #: why the last export failed ('' after a success): said at exit even when the program
    #: silenced logging, where the stock exporter only logs it
    last_failure = ""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        """Encode the batch by hand, then send it as the stock exporter does."""
        self.last_failure = ""
        if not self._fast_ready():
            return super().export(spans)  # type: ignore[no-any-return]
        result, self.last_failure = http_export(self, spans, encode_spans_fast)
        return result

    def _fast_ready(self) -> bool:
        """Whether the stock exporter has the parts ``export`` uses."""
        ready = self.__dict__.get("_flowtrace_fast")
        if ready is None:
            ready = self.__dict__["_flowtrace_fast"] = http_ready(self)
        return bool(ready)


def http_ready(exporter: Any) -> bool:
    """Whether the stock HTTP exporter and ``exporter`` have what :func:`http_export` uses."""
    return (all(hasattr(_http_exporter, name) for name in _STOCK_PARTS)
            and all(hasattr(exporter, name) for name in
                    ("_shutdown", "_metrics", "_client", "_max_request_size")))


def http_export(exporter: Any, spans: Sequence[ReadableSpan],
                encode: Callable[[Sequence[ReadableSpan]], bytes]) -> tuple[SpanExportResult, str]:
    """The stock OTLP/HTTP exporter's ``export`` with ``encode`` as its encoder, and why it failed.

    A copy of ``OTLPSpanExporter.export`` (opentelemetry-exporter-otlp-proto-http): the same
    shutdown check, metrics, logging, size limit and transport (retries are the client's).
    """
    stock: Any = _http_exporter
    if exporter._shutdown:
        stock._logger.warning("Exporter already shutdown, ignoring batch")
        return SpanExportResult.FAILURE, "the exporter was shut down"
    with exporter._metrics.export_operation(len(spans)) as result:
        try:
            serialized_data = encode(spans)
        except Exception as error:  # as the stock exporter: a failed batch, logged
            stock._logger.error("Failed to encode span batch: %s", error)
            result.error = error
            return SpanExportResult.FAILURE, f"encoding failed: {error!r}"
        limit = exporter._max_request_size
        if stock._is_request_too_large(serialized_data, limit):
            stock._logger.warning(
                "Dropping span batch: serialized size %d bytes exceeds max_request_size "
                "%d bytes.", len(serialized_data), limit)
            result.error = stock.RequestPayloadTooLargeError(
                f"Serialized span request size {len(serialized_data)} bytes exceeds "
                f"max_request_size {limit} bytes.")
            return SpanExportResult.FAILURE, (f"a request of {len(serialized_data)} bytes is "
                                              f"over max_request_size ({limit})")
        export_result = exporter._client.export(serialized_data)
        if not export_result.success:
            result.error = export_result.error
            result.error_attrs = (
                {stock.HTTP_RESPONSE_STATUS_CODE: export_result.status_code}
                if export_result.status_code is not None else None)
            return SpanExportResult.FAILURE, _failure_text(export_result)
    return SpanExportResult.SUCCESS, ""


def _stock_span_encoder() -> Callable[[Any], Any] | None:
    """The stock encoder's one-span function (private in the SDK), if it is where expected."""
    try:
        from opentelemetry.exporter.otlp.proto.common._internal import (  # noqa: PLC0415
            trace_encoder,
        )
    except ImportError:
        return None
    encode = getattr(trace_encoder, "_encode_span", None)
    return encode if callable(encode) else None


_STOCK_SPAN = _stock_span_encoder()


def stock_span_bytes(span: ReadableSpan) -> bytes:
    """The stock encoder's ``Span`` message for one span, serialized."""
    if _STOCK_SPAN is not None:
        encoded: bytes = _STOCK_SPAN(span).SerializeToString()
        return encoded
    from opentelemetry.exporter.otlp.proto.common.trace_encoder import (  # noqa: PLC0415
        encode_spans,
    )
    message: Any = encode_spans([span]).resource_spans[0].scope_spans[0].spans[0]
    return message.SerializeToString()  # type: ignore[no-any-return]


def encode_ours_fast(spans: Sequence[ReadableSpan]) -> bytes:
    """The stock request bytes, flowtrace_otel's spans encoded here and others by the stock code."""
    return encode_spans_fast(spans, stock_span_bytes)


def _failure_text(result: Any) -> str:
    """A failed HTTP export's reason: the status and its text, else the transport's exception."""
    status = getattr(result, "status_code", None)
    reason = getattr(result, "reason", None)
    error = getattr(result, "error", None)
    if status is not None:
        return f"HTTP {status}" + (f" {reason}" if reason else "")
    if error is not None:
        return repr(error)
    return ""  # retries ended by a shutdown: the exporter logged the errors it met
