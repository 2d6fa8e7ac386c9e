"""OpenTelemetry tracing of deferred calls, by the messaging semantic conventions.

    pip install 'jumpqueue[opentelemetry]'

    from jumpqueue.contrib.opentelemetry import JumpQueueInstrumentor
    JumpQueueInstrumentor().instrument()   # or `opentelemetry-instrument` finds it

`defer()` opens a PRODUCER span "send <destination>" inside the current
(request) span, and puts its context in the call's carrier, which travels in
RQ/Celery messages. Each attempt runs in a CONSUMER span "process
<destination>", current while the call runs (spans the call opens are its
children). That span starts from an empty context, never under the request's
span (which has ended by then), and links to the producer span; with
`instrument(link_only=False)` it is the producer span's child instead, one
trace from request to work. A call shed by a full backlog adds an event
"jumpqueue.shed" to the span current at `defer()`.

Options of `instrument()`: `tracer_provider` (default: the global one),
`link_only` (default True).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.instrumentation.instrumentor import (  # type: ignore[attr-defined,unused-ignore]
    BaseInstrumentor,
)
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

import jumpqueue
from jumpqueue.integration import CallObserver, ObservedCall, add_observer, remove_observer

__all__ = ["JumpQueueInstrumentor"]

#: The value of `messaging.system` on every span.
SYSTEM = "jumpqueue"


def _error_type(error: BaseException) -> str:
    kind = type(error)
    module = kind.__module__
    if module == "builtins":
        return kind.__qualname__
    if module.startswith("jumpqueue."):  # its public name, not the private module
        module = "jumpqueue"
    return f"{module}.{kind.__qualname__}"


def _attributes(call: ObservedCall, operation: str) -> dict[str, Any]:
    return {
        "messaging.system": SYSTEM,
        "messaging.operation.type": operation,
        "messaging.operation.name": operation,
        "messaging.destination.name": call.destination,
        "messaging.message.id": call.id,
        "messaging.jumpqueue.task": call.name,
    }


class _TracingObserver(CallObserver):
    """The spans of every call: see the module's docstring."""

    def __init__(self, tracer: trace.Tracer, *, link_only: bool) -> None:
        self._tracer = tracer
        self._link_only = link_only

    def __repr__(self) -> str:
        return f"<JumpQueueInstrumentor observer link_only={self._link_only}>"

    def deferred(self, call: ObservedCall) -> Mapping[str, str]:
        span = self._tracer.start_span(
            f"send {call.destination}", kind=SpanKind.PRODUCER, attributes=_attributes(call, "send")
        )
        carrier: dict[str, str] = {}
        propagate.inject(carrier, context=trace.set_span_in_context(span))
        span.end()
        return carrier

    def attempt_started(self, call: ObservedCall, attempt: int) -> object:
        # Extracted into an empty context: nothing of the request's context (its ended
        # server span) becomes the parent.
        producer = propagate.extract(call.carrier, context=otel_context.Context())
        producer_span = trace.get_current_span(producer).get_span_context()
        links = [Link(producer_span)] if producer_span.is_valid else []
        parent = otel_context.Context() if self._link_only else producer
        attributes = _attributes(call, "process")
        attributes["messaging.jumpqueue.attempt"] = attempt
        span = self._tracer.start_span(
            f"process {call.destination}",
            context=parent,
            kind=SpanKind.CONSUMER,
            links=links,
            attributes=attributes,
        )
        # Set in the attempt's own context (jumpqueue calls this hook there): the call's
        # code sees this span as current, and nothing else does.
        otel_context.attach(trace.set_span_in_context(span, parent))
        return span

    def attempt_finished(
        self,
        call: ObservedCall,  # noqa: ARG002 -- the hook's signature
        attempt: int,  # noqa: ARG002 -- the hook's signature
        outcome: str,
        error: BaseException | None,
        token: object,
    ) -> None:
        if not isinstance(token, trace.Span):
            return
        token.set_attribute("messaging.jumpqueue.outcome", outcome)
        if error is not None:
            token.set_attribute("error.type", _error_type(error))
            token.record_exception(error)
            token.set_status(Status(StatusCode.ERROR, f"{outcome}: {type(error).__name__}"))
        token.end()

    def shed(self, call: ObservedCall, policy: str) -> None:
        attributes = _attributes(call, "send")
        attributes["messaging.jumpqueue.shed_policy"] = policy
        trace.get_current_span().add_event("jumpqueue.shed", attributes)


class JumpQueueInstrumentor(BaseInstrumentor):  # type: ignore[misc,unused-ignore]
    """Traces jumpqueue's calls: `instrument(tracer_provider=None, link_only=True)`."""

    _observer: _TracingObserver | None = None

    def instrumentation_dependencies(self) -> Collection[str]:
        """What it instruments: jumpqueue itself."""
        return ("jumpqueue >= 0.1",)

    def _instrument(self, **kwargs: Any) -> None:
        tracer = trace.get_tracer(
            __name__, jumpqueue.__version__, tracer_provider=kwargs.get("tracer_provider")
        )
        self._observer = _TracingObserver(tracer, link_only=bool(kwargs.get("link_only", True)))
        add_observer(self._observer)

    def _uninstrument(self, **kwargs: Any) -> None:  # noqa: ARG002 -- BaseInstrumentor's hook
        if self._observer is not None:
            remove_observer(self._observer)
            self._observer = None
