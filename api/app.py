"""Build the FastAPI application; its lifespan opens the store, Ray and the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from api.errors import install_error_handlers
from api.limits import BodyLimits
from api.routes import datasets, health, models, plots, studies, tokens
from searchsvc import __version__
from searchsvc.config import Settings
from searchsvc.datasets import DatasetService, UploadLimits
from searchsvc.model_registry import ModelRegistry
from searchsvc.service import PathRules, StudyService, UserLimits
from searchsvc.signals import keep_sigterm_handler
from searchsvc.store import Store

log = logging.getLogger("searchsvc.api")


def create_app(settings: Settings | None = None, *, dispatch: bool = True) -> FastAPI:
    """The control plane. With ``dispatch=False`` it serves the API alone (no Ray):
    studies are stored and stay pending until a dispatching instance picks them up."""
    settings = settings or Settings()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        database_url = settings.resolved_database_url()
        registry = ModelRegistry.load(models_dir=settings.models_dir, models_file=settings.models_file)
        log.info("model registry: %d models offered", len(registry))
        store = Store.open(database_url)
        rules = PathRules(roots=tuple(settings.allowed_roots()), data_dir=settings.data_dir.expanduser().resolve(),
                          allow_hub=settings.allow_hub_models)
        limits = UserLimits(max_pending_studies=settings.max_pending_studies_per_user)
        app.state.datasets = DatasetService(store, root=settings.resolved_data_root(), limits=UploadLimits(
            max_file_bytes=settings.dataset_max_file_bytes, max_total_bytes=settings.dataset_max_total_bytes))
        app.state.service = StudyService(store, paths=rules, limits=limits, models=registry, datasets=app.state.datasets)
        app.state.metrics_token = settings.metrics_token
        app.state.ray = None
        app.state.dispatcher = None
        if dispatch:
            from searchsvc.dispatch.dispatcher import Dispatcher
            from searchsvc.dispatch.ray_cluster import connect_ray, disconnect_ray

            with keep_sigterm_handler():  # Ray's driver would take SIGTERM from uvicorn's graceful shutdown
                ray = connect_ray(settings.ray_address, num_cpus=settings.ray_num_cpus,
                                  dashboard_port=settings.ray_dashboard_port)
            dispatcher = Dispatcher(
                store,
                database_url=database_url,
                ray_address=ray.address,
                dashboard_url=ray.dashboard_url,
                data_dir=settings.resolved_data_dir(),
                interval_s=settings.dispatch_interval_s,
                max_running=settings.max_running_studies,
                max_trials_per_user=settings.max_trials_per_user,
                max_studies_per_user=settings.max_running_studies_per_user,
            )
            dispatcher.start()
            app.state.ray, app.state.dispatcher = ray, dispatcher
        try:
            yield
        finally:
            if app.state.dispatcher is not None:
                app.state.dispatcher.shutdown()
                disconnect_ray()
            store.close()

    app = FastAPI(
        title="searchsvc",
        version=__version__,
        description="Search hyperparameters and prefix architectures for multi-task PEFT.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    # The dataset upload streams its own body under its own limits (see api.routes.datasets).
    app.add_middleware(BodyLimits, max_bytes=settings.max_request_bytes, streamed=frozenset({datasets.PATH}))
    app.include_router(health.router)
    app.include_router(studies.router)
    app.include_router(plots.router)
    app.include_router(tokens.router)
    app.include_router(models.router)
    app.include_router(datasets.router)
    return app
