"""One settings object, built at start-up from flags and the environment, passed down.

Precedence: explicit arguments (CLI flags) first, then ``SEARCHSVC_*`` environment
variables, then the embedded defaults (an SQLite file and a local Ray).
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from searchsvc.paths import parse_roots
from searchsvc.redact import mask_url


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEARCHSVC_", extra="ignore", populate_by_name=True)

    database_url: str = Field("", description="SQLAlchemy URL; empty means an SQLite file in the working directory")
    ray_address: str | None = Field(None, description="an existing Ray cluster; unset starts a local Ray")
    data_dir: Path = Field(Path("searchsvc-data"), description="checkpoints, Ray results and runner logs")
    host: str = "127.0.0.1"
    port: int = 8000
    ray_num_cpus: int | None = Field(None, description="CPUs of the local Ray (default: all)")
    ray_dashboard_port: int = 8265
    dispatch_interval_s: float = Field(1.0, gt=0, description="how often the dispatcher looks for new studies")
    max_running_studies: int = Field(4, gt=0)
    max_running_studies_per_user: int | None = Field(
        2, gt=0, description="studies one user may run at once; the rest of theirs wait (others' do not)"
    )
    max_trials_per_user: int | None = Field(8, gt=0, description="concurrent trials one user may run across studies")
    max_pending_studies_per_user: int | None = Field(
        20, gt=0, description="studies one user may have waiting; a further submission is refused (409)"
    )
    metrics_token: str | None = Field(None, description="when set, /metrics requires 'Authorization: Bearer <it>'")
    allowed_paths: str = Field(
        "", description=f"folders a spec's task paths and model path may lie under, separated by {os.pathsep!r}; "
                        "empty (the default) allows none"
    )
    allow_hub_models: bool = Field(
        False, validation_alias=AliasChoices("SEARCHSVC_ALLOW_HUB", "SEARCHSVC_ALLOW_HUB_MODELS"),
        description="accept a model-hub id as a spec's model (workers download it); env SEARCHSVC_ALLOW_HUB",
    )
    models_dir: Path | None = Field(None, description="each subfolder holding a config.json is a model, its name the id")
    models_file: Path | None = Field(None, description="YAML/JSON: model id -> folder, or {path, description, family}")
    max_request_bytes: int = Field(1 << 20, gt=0, description="larger request bodies are refused with 413")
    data_root: Path | None = Field(None, description="uploaded datasets, one folder per owner; default <data_dir>/datasets")
    dataset_max_file_bytes: int = Field(256 << 20, gt=0, description="an uploaded train.jsonl or dev.jsonl over this: 413")
    dataset_max_total_bytes: int = Field(512 << 20, gt=0, description="an upload whose files pass this in all: 413")

    def allowed_roots(self) -> list[Path]:
        return parse_roots(self.allowed_paths)

    def masked_database_url(self) -> str:
        """The database URL for logs and messages: the password replaced by ``***``."""
        return mask_url(self.resolved_database_url())

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(Path.cwd() / 'searchsvc.db').resolve()}"

    def resolved_data_root(self) -> Path:
        """Where uploaded datasets live (created by the first upload)."""
        return (self.data_root or self.data_dir / "datasets").expanduser().resolve()

    def resolved_data_dir(self) -> Path:
        path = self.data_dir.expanduser().resolve()
        path.mkdir(parents=True, exist_ok=True)
        return path
