"""A small client for the farm's HTTP API, used by the CLI, the demo and the Blender add-on (which ships this module:
it needs only `requests`, which Blender bundles). Errors become one readable line."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import IO, Any
from urllib.parse import quote

import requests

TERMINAL = {"COMPLETED", "FAILED", "CANCELED"}


class ClientError(Exception):
    """The API said no, or could not be reached; the message is ready to print."""


class FarmClient:
    def __init__(self, base_url: str, timeout: float = 60.0, token: str | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self.token = token
        self.http = requests.Session()
        if token:  # requests drops it on a redirect to another host (a presigned storage URL)
            self.http.headers["Authorization"] = f"Bearer {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        url = f"{self.base_url}{path}"
        kwargs.setdefault("timeout", self.timeout)
        try:
            response = self.http.request(method, url, **kwargs)
        except requests.ConnectionError:
            raise ClientError(
                f"cannot reach the farm at {self.base_url} (is `farm web` running? set FARM_API_URL)"
            ) from None
        except requests.Timeout:
            raise ClientError(f"the farm at {self.base_url} did not answer within {self.timeout:.0f} s") from None
        if response.status_code == 401 and not self.token:
            raise ClientError("the farm wants an API token: set FARM_TOKEN, or run `farm login`")
        if response.status_code >= 400:
            raise ClientError(_error_line(response))
        return response

    def me(self) -> dict[str, Any]:
        return self._call("GET", "/api/me").json()["user"]

    def tokens(self) -> list[dict[str, Any]]:
        return self._call("GET", "/api/tokens").json()["tokens"]

    def create_token(self, name: str) -> dict[str, Any]:
        return self._call("POST", "/api/tokens", json={"name": name}).json()

    def revoke_token(self, token_or_id: str) -> dict[str, Any]:
        key = "id" if token_or_id.isdigit() else "token"
        return self._call("POST", "/api/tokens/revoke", json={key: token_or_id}).json()["token"]

    def submit(self, path: Path, fields: Mapping[str, Any]) -> dict[str, Any]:
        data = {k: str(v) for k, v in fields.items() if v is not None}
        with open(path, "rb") as fh:
            return self._call(
                "POST", "/api/jobs", files={"file": (path.name, fh)}, data=data, timeout=max(self.timeout, 600)
            ).json()["job"]

    def missing_files(self, files: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Which of these {"sha256", "size"} the farm does not hold yet."""
        return self._call("POST", "/api/files/check", json={"files": files}, timeout=max(self.timeout, 300)).json()[
            "missing"
        ]

    def put_file(self, sha256: str, path: Path, on_bytes: Callable[[int], None]) -> None:
        """Upload one project file, streamed (with its length, so the farm knows its size up front)."""
        with open(path, "rb") as fh:
            self._call("PUT", f"/api/files/{sha256}", data=_Counted(fh, on_bytes), timeout=max(self.timeout, 3600))

    def submit_manifest(self, manifest: Mapping[str, Any], fields: Mapping[str, Any]) -> dict[str, Any]:
        data = {k: str(v) for k, v in fields.items() if v is not None}
        data["manifest"] = json.dumps(manifest)
        return self._call("POST", "/api/jobs", data=data, timeout=max(self.timeout, 600)).json()["job"]

    def jobs(self, **query: Any) -> list[dict[str, Any]]:
        params = {k: v for k, v in query.items() if v is not None}
        return self._call("GET", "/api/jobs", params=params).json()["jobs"]

    def job(self, job_id: str) -> dict[str, Any]:
        return self._call("GET", f"/api/jobs/{job_id}").json()["job"]

    def cancel(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/cancel").json()["job"]

    def delete(self, job_id: str) -> None:
        self._call("DELETE", f"/api/jobs/{quote(job_id, safe='')}")

    def retry(self, job_id: str) -> dict[str, Any]:
        return self._call("POST", f"/api/jobs/{job_id}/retry").json()["job"]

    def health(self) -> bool:
        try:
            return self.http.get(f"{self.base_url}/api/health", timeout=2).ok
        except requests.RequestException:
            return False

    def wait(
        self,
        job_id: str,
        on_update: Callable[[dict[str, Any]], None],
        interval: float = 0.5,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """Poll until the job ends, calling `on_update` whenever it changed."""
        deadline = time.monotonic() + timeout if timeout else None
        seen = None
        while True:
            job = self.job(job_id)
            if job.get("version") != seen:
                seen = job.get("version")
                on_update(job)
            if job["status"] in TERMINAL:
                return job
            if deadline and time.monotonic() > deadline:
                raise ClientError(f"job {job_id} still {job['status']} after {timeout:.0f} s")
            time.sleep(interval)

    def download(self, job_id: str, out_dir: Path) -> Path:
        """Fetch the job's zip into `out_dir` (following a redirect to storage); returns the file's path."""
        job = self.job(job_id)
        if not job.get("asset"):
            raise ClientError(f"job {job_id} is {job['status']}; its zip is not ready")
        out_dir.mkdir(parents=True, exist_ok=True)
        target = out_dir / job["asset"]["filename"]
        part = target.with_name(target.name + ".part")
        with (
            self._call("GET", f"/api/jobs/{job_id}/asset", stream=True, timeout=max(self.timeout, 600)) as resp,
            open(part, "wb") as out,
        ):
            for block in resp.iter_content(1024 * 1024):
                out.write(block)
        os.replace(part, target)
        return target


class _Counted:
    """A file read by requests as a body of known length, reporting each block sent (for a progress bar)."""

    def __init__(self, fh: IO[bytes], on_bytes: Callable[[int], None]) -> None:
        self.fh, self.on_bytes = fh, on_bytes
        self.length = os.fstat(fh.fileno()).st_size

    def __len__(self) -> int:
        return self.length

    def read(self, size: int = -1) -> bytes:
        block = self.fh.read(size)
        self.on_bytes(len(block))
        return block


def _error_line(response: requests.Response) -> str:
    try:
        error = response.json()["error"]
        field = f" [{error['field']}]" if error.get("field") else ""
        return f"{error['message']}{field} (HTTP {response.status_code} {error['code']})"
    except (ValueError, KeyError, TypeError):
        return f"HTTP {response.status_code} from {response.url}"
