"""The CLI and SDK speak plainly: every kind of failure gets its own exit code and error type,
a first line naming the cause, a fix, and no traceback (unless --debug).

The CLI runs in a subprocess against the real app served over HTTP (no Ray: studies stay
pending), or against nothing at all, or against a broken proxy.
"""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from searchsvc.client import (
    ApiError,
    Client,
    ClientError,
    Conflict,
    InvalidSpec,
    NotFound,
    ServerError,
    ServiceUnreachable,
    Unauthorized,
)
from searchsvc.local_server import free_port
from tests.utils.api_server import ServedApi, served_api


def run_cli(*args: str, url: str, token: str | None = None) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if k not in ("SEARCHSVC_URL", "SEARCHSVC_TOKEN", "SEARCHSVC_DEBUG")}
    env["SEARCHSVC_URL"] = url
    if token is not None:
        env["SEARCHSVC_TOKEN"] = token
    return subprocess.run([sys.executable, "-m", "searchsvc", *args], check=False, capture_output=True, text=True, timeout=120, env=env)


@pytest.fixture
def api(tmp_path: Path) -> Iterator[tuple[ServedApi, str]]:
    with served_api(f"sqlite:///{tmp_path / 'db.sqlite'}") as served:
        _, token = served.store.issue_token("alice")
        yield served, token


def first_line(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    return result.stderr.splitlines()[0]


def test_no_server_exit_3_names_the_url_and_the_fix() -> None:
    url = f"http://127.0.0.1:{free_port()}"
    result = run_cli("study", "list", url=url, token="ss_x")
    assert result.returncode == 3
    assert first_line(result).startswith(f"error: cannot reach the searchsvc service at {url} (")
    assert "SEARCHSVC_URL" in result.stderr and "searchsvc serve" in result.stderr
    assert len(result.stderr.splitlines()) <= 3


def test_debug_adds_the_traceback() -> None:
    result = run_cli("--debug", "study", "list", url=f"http://127.0.0.1:{free_port()}")
    assert result.returncode == 3
    assert result.stderr.startswith("Traceback") and "ServiceUnreachable" in result.stderr
    assert result.stderr.strip().splitlines()[-2].startswith("error: cannot reach")
    # the flag also works after the subcommand
    again = run_cli("study", "list", "--debug", url=f"http://127.0.0.1:{free_port()}")
    assert again.returncode == 3 and again.stderr.startswith("Traceback")


def test_missing_and_refused_tokens_exit_4_and_say_how_to_get_one(api: tuple[ServedApi, str]) -> None:
    served, _ = api
    missing = run_cli("study", "list", url=served.url)
    assert missing.returncode == 4
    assert first_line(missing) == f"error: no API token was given (GET {served.url}/v1/studies answered HTTP 401)"
    assert "searchsvc token create --user NAME" in missing.stderr
    refused = run_cli("study", "list", url=served.url, token="ss_wrong")
    assert refused.returncode == 4
    assert first_line(refused).startswith(f"error: the service refused the token (HTTP 401 from GET {served.url}/v1/studies: ")
    assert "SEARCHSVC_TOKEN" in refused.stderr


def test_missing_study_exit_5(api: tuple[ServedApi, str]) -> None:
    served, token = api
    result = run_cli("study", "show", "999", url=served.url, token=token)
    assert result.returncode == 5
    assert first_line(result) == f"error: not found (HTTP 404 from GET {served.url}/v1/studies/999): study 999 not found"
    assert "searchsvc study list" in result.stderr


def test_bad_spec_exit_2_lists_every_field(api: tuple[ServedApi, str], tmp_path: Path, minimal_spec: dict) -> None:
    served, token = api
    spec = tmp_path / "bad.json"
    spec.write_text(json.dumps({**minimal_spec, "search": {"num_trials": 0}, "method": "nope"}))
    result = run_cli("study", "submit", str(spec), url=served.url, token=token)
    assert result.returncode == 2
    assert first_line(result) == f"error: the spec was rejected (HTTP 422 from POST {served.url}/v1/studies), 2 problem(s):"
    assert "  search.num_trials: " in result.stderr and "  method: " in result.stderr
    assert served.store.list_studies() == []


def test_missing_spec_file_exit_2(api: tuple[ServedApi, str], tmp_path: Path) -> None:
    served, token = api
    result = run_cli("study", "submit", str(tmp_path / "nope.yaml"), url=served.url, token=token)
    assert result.returncode == 2
    assert first_line(result) == f"error: no such file: {tmp_path / 'nope.yaml'}"


def test_conflict_exit_6(api: tuple[ServedApi, str], minimal_spec: dict) -> None:
    served, token = api
    with Client(served.url, token) as client:
        study = client.create_study(minimal_spec).stop()
    result = run_cli("study", "stop", str(study.id), url=served.url, token=token)
    assert result.returncode == 6
    assert first_line(result).endswith(f"study {study.id} is already stopped")


class _BrokenProxy(http.server.BaseHTTPRequestHandler):
    """A reverse proxy whose upstream is down: 502 with an HTML body, as nginx answers."""

    def do_GET(self) -> None:  # the stdlib names it so
        body = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
        self.send_response(502)
        self.send_header("Content-Type", "text/html")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def broken_proxy() -> Iterator[str]:
    server = http.server.HTTPServer(("127.0.0.1", 0), _BrokenProxy)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}"
    server.shutdown()
    server.server_close()


def test_server_error_exit_7(broken_proxy: str) -> None:
    result = run_cli("study", "list", url=broken_proxy, token="ss_x")
    assert result.returncode == 7
    assert first_line(result).startswith(f"error: the service failed (HTTP 502 from GET {broken_proxy}/v1/studies): <html>")
    assert "log" in result.stderr


def test_sdk_raises_its_own_types(api: tuple[ServedApi, str], minimal_spec: dict, broken_proxy: str) -> None:
    served, token = api
    with pytest.raises(ServiceUnreachable) as unreachable, Client(f"http://127.0.0.1:{free_port()}", token) as client:
        client.studies()
    assert unreachable.value.url.startswith("http://127.0.0.1:")
    with pytest.raises(Unauthorized) as refused, Client(served.url, "ss_wrong") as client:
        client.studies()
    assert refused.value.status == 401 and refused.value.url == f"{served.url}/v1/studies"
    with Client(served.url, token) as client:
        with pytest.raises(NotFound):
            client.study(12345)
        with pytest.raises(InvalidSpec) as invalid:
            client.create_study({**minimal_spec, "search": {"num_trials": 0}})
        assert invalid.value.problems[0][0] == "search.num_trials"
        study = client.create_study(minimal_spec).stop()
        with pytest.raises(Conflict):
            study.stop()
    with pytest.raises(ServerError) as failed, Client(broken_proxy, token) as client:
        client.studies()
    assert failed.value.status == 502
    for kind in (ServiceUnreachable, Unauthorized, NotFound, InvalidSpec, Conflict, ServerError):
        assert issubclass(kind, ClientError)
    assert all(issubclass(k, ApiError) for k in (Unauthorized, NotFound, InvalidSpec, Conflict, ServerError))


def test_sdk_error_tree_is_public_and_documented() -> None:
    import searchsvc.client as sdk
    from searchsvc.client import _errors

    public = {name for name, value in vars(_errors).items() if isinstance(value, type) and issubclass(value, ClientError)}
    assert public <= set(sdk.__all__)
    for name in public:
        assert name in (_errors.__doc__ or ""), f"{name} missing from the error tree in the docstring"


def test_help_lists_every_exit_code() -> None:
    from searchsvc import cli_errors

    result = subprocess.run([sys.executable, "-m", "searchsvc", "--help"], check=False, capture_output=True, text=True, timeout=60)
    codes = {value for name, value in vars(cli_errors).items() if name.startswith("EXIT_") and isinstance(value, int)}
    listed = {int(line.split()[0]) for line in result.stdout.split("exit codes:")[1].splitlines() if line[:3].strip().isdigit()}
    assert listed == codes


def test_a_closed_pipe_is_not_an_error(api: tuple[ServedApi, str], minimal_spec: dict) -> None:
    served, token = api
    with Client(served.url, token) as client:
        client.create_study(minimal_spec)
    env = {**os.environ, "SEARCHSVC_URL": served.url, "SEARCHSVC_TOKEN": token}
    # the reader is gone before the CLI writes (as after `| head` has read enough)
    result = subprocess.run(["bash", "-c", f"set -o pipefail; {sys.executable} -m searchsvc study list | true"], check=False,
                            capture_output=True, text=True, timeout=60, env=env)
    assert result.stderr == ""
    assert result.returncode == 141
