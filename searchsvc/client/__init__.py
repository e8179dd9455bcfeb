"""The searchsvc Python SDK. Needs only httpx (and optionally tqdm, PyYAML).

    from searchsvc.client import Client
    client = Client("http://127.0.0.1:8000", token)
    study = client.create_study("study.yaml")
    study.wait(progress=True)
    print(study.best())

Every error is a ``ClientError``; the tree is drawn in ``searchsvc.client._errors``.
"""

from searchsvc.client._client import Client, Study, load_spec
from searchsvc.client._errors import (
    ApiError,
    ClientError,
    Conflict,
    InvalidSpec,
    NotATaskFolder,
    NotFound,
    ServerError,
    ServiceUnreachable,
    StudyTimeout,
    TooLarge,
    Unauthorized,
)

__all__ = [
    "ApiError", "Client", "ClientError", "Conflict", "InvalidSpec", "NotATaskFolder", "NotFound", "ServerError",
    "ServiceUnreachable", "Study", "StudyTimeout", "TooLarge", "Unauthorized", "load_spec",
]
