"""Distributed tracing: one business event followed from the outbox that wrote it, through the
relay and the router, to the handler of the box that applied it.

The W3C trace context travels in the envelope as the CloudEvents distributed-tracing extension
(``ce_traceparent``, ``ce_tracestate``; not covered by signatures, so each stage may set its
own span as the parent of the next). Each stage makes one span per event:

====================  ==========  ==========================================================
``boxbus.outbox``     producer    the event written in the box's transaction (a child of the
                                  caller's span: an inbox handler's follow-up event is part of
                                  the trace of the event it handles)
``boxbus.relay``      producer    sent from the outbox to the box's ingress topic
``boxbus.router``     consumer    routed to the region, inbox and mail topics
``boxbus.inbox``      consumer    applied by the recipient's handler
====================  ==========  ==========================================================

OpenTelemetry's API does the work; spans go where the settings say (``BOXBUS_TRACING``:
``none``, the default, makes no span at all and costs a flag test per event, or ``otlp``, to
``OTEL_EXPORTER_OTLP_ENDPOINT`` with the extra ``boxbus[tracing]``). A test or an embedding
application passes its own provider to :func:`use`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Span, SpanKind, StatusCode, Tracer
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from bus.errors import PrerequisiteError
from bus.settings import Settings

TRACEPARENT = "ce_traceparent"
TRACESTATE = "ce_tracestate"
_W3C = {"traceparent": TRACEPARENT, "tracestate": TRACESTATE}
_propagator = TraceContextTextMapPropagator()
_tracer: Tracer | None = None

PRODUCER, CONSUMER = SpanKind.PRODUCER, SpanKind.CONSUMER


def use(provider: trace.TracerProvider | None) -> None:
    """Trace with ``provider`` (None: stop tracing)."""
    global _tracer
    _tracer = provider.get_tracer("boxbus") if provider is not None else None


def configure(settings: Settings) -> None:
    """Set tracing up as the settings say (``tracing``: none or otlp)."""
    if settings.tracing == "none":
        return
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:
        raise PrerequisiteError(
            "BOXBUS_TRACING=otlp needs the OpenTelemetry SDK and its OTLP exporter",
            hint="pip install 'boxbus[tracing]', or set BOXBUS_TRACING=none") from exc
    provider = TracerProvider(resource=Resource.create({"service.name": settings.service_name}))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    use(provider)


def enabled() -> bool:
    return _tracer is not None


def parent_of(headers: Sequence[tuple[str, bytes]]) -> Context:
    """The trace context an event carries (an empty one if it carries none)."""
    carrier = {}
    for name, value in headers:
        if name in (TRACEPARENT, TRACESTATE):
            carrier[name[3:]] = value.decode("ascii", "replace")
    return _propagator.extract(carrier)


def with_span(headers: Sequence[tuple[str, bytes]], span: Span) -> list[tuple[str, bytes]]:
    """``headers`` with ``span`` as the trace context of the event's next stage."""
    carrier: dict[str, str] = {}
    _propagator.inject(carrier, context=trace.set_span_in_context(span))
    kept = [(n, v) for n, v in headers if n not in (TRACEPARENT, TRACESTATE)]
    return kept + [(_W3C[k], v.encode()) for k, v in carrier.items() if k in _W3C]


def start(name: str, kind: SpanKind, headers: Sequence[tuple[str, bytes]] | None = None,
          **attributes: Any) -> Span:
    """A span of one stage; its parent is the event's context, or the current span when the
    event carries none (or ``headers`` is None: a new event)."""
    assert _tracer is not None, "tracing is off: check enabled() first"
    context = parent_of(headers) if headers is not None else None
    if context is not None and not trace.get_current_span(context).get_span_context().is_valid:
        context = None
    return _tracer.start_span(name, context=context, kind=kind,
                              attributes={k: v for k, v in attributes.items() if v is not None})


def end(spans: list[Span], error: BaseException | None = None) -> None:
    """End the spans of a batch (marked failed with ``error``) and forget them."""
    for span in spans:
        if error is not None:
            span.set_status(StatusCode.ERROR, repr(error))
        span.end()
    spans.clear()


@contextmanager
def stage(name: str, kind: SpanKind, headers: Sequence[tuple[str, bytes]] | None = None,
          **attributes: Any) -> Iterator[Span | None]:
    """``start`` as the current span for the block (nothing at all when tracing is off)."""
    if _tracer is None:
        yield None
        return
    span = start(name, kind, headers, **attributes)
    with trace.use_span(span, end_on_exit=True, record_exception=True):
        yield span
