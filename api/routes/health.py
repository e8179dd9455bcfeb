"""Liveness and Prometheus metrics, at the root (scraped by infrastructure: no user token)."""

from __future__ import annotations

import hmac
from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import PlainTextResponse
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily

from api.schemas import error_responses
from searchsvc.errors import AuthError
from searchsvc.store import STUDY_STATES, TRIAL_STATES

router = APIRouter(tags=["health"])


@router.get("/healthz", responses=error_responses(503))
def healthz(request: Request) -> dict[str, Any]:
    """Whether the parts are up; no addresses (it needs no token, and Ray's GCS and
    dashboard addresses are for the operator's eyes, in the server's log)."""
    service = request.app.state.service
    service.store.count_by_state()  # touches the database: a broken one fails here
    ray = request.app.state.ray
    dispatcher = request.app.state.dispatcher
    return {
        "status": "ok",
        "database": "ok",
        "ray": "connected" if ray else "off",
        "dispatcher": "running" if dispatcher else "off",
    }


class _StoreCollector:
    """Reads the counts from SQL at scrape time, so every replica reports the truth."""

    def __init__(self, request: Request) -> None:
        self.store = request.app.state.service.store

    def collect(self):  # type: ignore[no-untyped-def]
        studies, trials, reports = self.store.count_by_state()
        g = GaugeMetricFamily("searchsvc_studies", "Studies by state", labels=["state"])
        for state in STUDY_STATES:
            g.add_metric([state], studies.get(state, 0))
        yield g
        g = GaugeMetricFamily("searchsvc_trials", "Trials by state", labels=["state"])
        for state in TRIAL_STATES:
            g.add_metric([state], trials.get(state, 0))
        yield g
        yield GaugeMetricFamily("searchsvc_reports", "Per-epoch reports stored", value=reports)


@router.get("/metrics", response_class=PlainTextResponse, responses=error_responses(401, 503))
def metrics(request: Request) -> PlainTextResponse:
    """Prometheus text. Open by default (scraped by infrastructure); with the operator's
    ``SEARCHSVC_METRICS_TOKEN`` set, it needs that token as a bearer token."""
    required = getattr(request.app.state, "metrics_token", None)
    if required and not hmac.compare_digest(request.headers.get("authorization", ""), f"Bearer {required}"):
        raise AuthError("/metrics needs the metrics token")
    registry = CollectorRegistry()
    registry.register(_StoreCollector(request))  # type: ignore[arg-type]
    return PlainTextResponse(generate_latest(registry).decode(), media_type="text/plain; version=0.0.4")
