"""The active OpenTelemetry span as an exemplar (docs/format.md section 15), for the HTTP middleware.

opentelemetry-api is optional: imported on first use; without it, or without a valid active span,
``current_exemplar()`` is None and the middleware records its requests without exemplars.
"""

from __future__ import annotations

from typing import Any

_get_span: Any = None  # opentelemetry.trace.get_current_span once imported; False if not importable


def current_exemplar() -> dict[str, str] | None:
    """``{"trace_id": 32 hex digits, "span_id": 16}`` of the active span, or None."""
    global _get_span
    get = _get_span
    if get is None:
        try:
            from opentelemetry.trace import get_current_span
        except ImportError:
            get = False
        else:
            get = get_current_span
        _get_span = get
    if get is False:
        return None
    context = get().get_span_context()
    if not context.is_valid:
        return None
    return {"trace_id": format(context.trace_id, "032x"), "span_id": format(context.span_id, "016x")}
