"""The `s3://` back end: S3 or any S3-compatible endpoint (MinIO, Ceph, moto). The only module of the farm that
imports boto3; botocore's errors end here, as `FileNotFoundError` or `StorageUnavailable`."""

from __future__ import annotations

import contextlib
import functools
import os
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from farm.storage import CHUNK, Sink, Storage, StorageUnavailable, T, _check_key, replacing

STREAM_ERRORS = (BotoCoreError,)  # a storage stream cut mid-read: worth a retry of the task that read it


class MultipartUpload:
    """Upload an object of unknown size part by part while it is produced: parts of `part_size` go up on a few
    threads while the next is filled, so memory holds at most `in_flight + 1` parts however big the object. Each
    part carries its CRC-32, which the server checks, as boto3's own uploads do (without a declared algorithm, S3
    servers may checksum the whole object again at the end)."""

    def __init__(self, client: Any, bucket: str, key: str, content_type: str | None, part_size: int) -> None:
        self.client, self.bucket, self.key, self.content_type = client, bucket, key, content_type
        self.part_size, self.buffer = part_size, bytearray()
        self.upload_id: str | None = None
        self.parts: list[Future[dict[str, Any]]] = []
        self.pool = ThreadPoolExecutor(4, thread_name_prefix="s3-part")
        self.slots = threading.BoundedSemaphore(4)

    def write(self, data: bytes | memoryview) -> None:
        self.buffer += data
        while len(self.buffer) >= self.part_size:  # the full part goes as it is; only the overflow is copied
            part, self.buffer = self.buffer, self.buffer[self.part_size :]
            del part[self.part_size :]
            self._send(part)

    def _send(self, data: bytearray) -> None:
        if self.upload_id is None:
            extra = {"ContentType": self.content_type} if self.content_type else {}
            self.upload_id = self.client.create_multipart_upload(
                Bucket=self.bucket, Key=self.key, ChecksumAlgorithm="CRC32", **extra
            )["UploadId"]
        failed = next((f.exception() for f in self.parts if f.done() and f.exception()), None)
        if failed:
            raise failed  # stop producing: the upload cannot complete
        number = len(self.parts) + 1
        self.slots.acquire()
        future = self.pool.submit(self._part, number, data)
        future.add_done_callback(lambda _: self.slots.release())
        self.parts.append(future)

    def _part(self, number: int, data: bytearray) -> dict[str, Any]:
        answer = self.client.upload_part(
            Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, PartNumber=number, Body=data,
            ChecksumAlgorithm="CRC32",
        )  # fmt: skip
        checksum = {"ChecksumCRC32": answer["ChecksumCRC32"]} if "ChecksumCRC32" in answer else {}
        return {"PartNumber": number, "ETag": answer["ETag"], **checksum}  # a server without checksums sends none

    def finish(self) -> None:
        try:
            if self.upload_id is None:  # small enough for one request
                extra = {"ContentType": self.content_type} if self.content_type else {}
                self.client.put_object(Bucket=self.bucket, Key=self.key, Body=bytes(self.buffer), **extra)
                return
            if self.buffer:
                self._send(self.buffer)
            parts = [future.result() for future in self.parts]
            self.client.complete_multipart_upload(
                Bucket=self.bucket, Key=self.key, UploadId=self.upload_id, MultipartUpload={"Parts": parts}
            )
        finally:
            self.pool.shutdown(wait=True)

    def abort(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        if self.upload_id is not None:
            with contextlib.suppress(Exception):  # best effort: a bucket lifecycle rule reaps what is left
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=self.key, UploadId=self.upload_id)


S3_OUTAGES = (
    S3UploadFailedError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)


def _unavailable_on_outage(method: Callable[..., T]) -> Callable[..., T]:
    """Turn botocore's outage errors into StorageUnavailable (after boto3's own retries gave up)."""

    @functools.wraps(method)
    def wrapper(self: S3Storage, *args: Any, **kwargs: Any) -> T:
        try:
            return method(self, *args, **kwargs)
        except ClientError as exc:
            if int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0) >= 500:
                raise StorageUnavailable(str(exc)) from exc
            raise
        except S3_OUTAGES as exc:
            raise StorageUnavailable(str(exc)) from exc

    return wrapper


class S3Storage(Storage):
    """S3 or any S3-compatible endpoint (MinIO, Ceph, moto). boto3 retries transient errors with backoff; what
    still fails after that is StorageUnavailable, which callers retry for longer.

    Download URLs are presigned for `public_url` when it is given: the farm may reach S3 as `http://minio:9000`
    on its own network while browsers reach it elsewhere, and a SigV4 signature covers the host it was made for."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        endpoint_url: str | None,
        *,
        public_url: str | None,
        url_seconds: int,
    ) -> None:
        self.bucket, self.prefix, self.url_seconds = bucket, prefix.strip("/"), url_seconds
        self.url_prefix = f"s3://{bucket}/{self.prefix}".rstrip("/")
        config = Config(
            retries={"mode": "standard", "max_attempts": 10},
            connect_timeout=10,
            read_timeout=120,
            signature_version="s3v4",
            s3={"addressing_style": "path"} if endpoint_url else None,
        )
        self.client: Any = boto3.session.Session().client("s3", endpoint_url=endpoint_url, config=config)
        # signing is local: this client never sends a request, so the farm need not reach the public address
        self.signer: Any = (
            boto3.session.Session().client("s3", endpoint_url=public_url, config=config) if public_url else self.client
        )
        self.transfer = TransferConfig(
            multipart_threshold=64 * CHUNK, multipart_chunksize=64 * CHUNK, max_concurrency=8
        )
        self._missing = self.client.exceptions.NoSuchKey

    def _key(self, key: str) -> str:
        _check_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @_unavailable_on_outage
    def ensure_ready(self) -> None:
        try:
            self.client.head_bucket(Bucket=self.bucket)
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") not in ("404", "NoSuchBucket"):
                raise
            self.client.create_bucket(Bucket=self.bucket)

    @_unavailable_on_outage
    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> None:
        """One PUT for a file under the multipart threshold (a frame, a log); the transfer manager, with its
        threads, only for larger ones, which it sends in parts at once."""
        if os.path.getsize(path) >= self.transfer.multipart_threshold:
            extra = {"ContentType": content_type} if content_type else None
            self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer)
            return
        with open(path, "rb") as body:
            self._put(key, body, content_type)

    @_unavailable_on_outage
    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        self._put(key, data, content_type)

    def _put(self, key: str, body: bytes | IO[bytes], content_type: str | None) -> None:
        extra = {"ContentType": content_type} if content_type else {}
        self.client.put_object(Bucket=self.bucket, Key=self._key(key), Body=body, **extra)

    @_unavailable_on_outage
    def open(self, key: str) -> IO[bytes]:
        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        except self._missing:
            raise FileNotFoundError(key) from None

    @_unavailable_on_outage
    def get_file(self, key: str, dest: str | os.PathLike) -> None:
        """One GET streamed to disk; an object big enough for parts comes down as parallel ranged GETs instead.
        (boto3's download_file alone costs a HEAD and a thread pool per object: 3x slower for a small frame.)"""
        with replacing(Path(dest)) as tmp:
            try:
                answer = self.client.get_object(Bucket=self.bucket, Key=self._key(key))
            except self._missing:
                raise FileNotFoundError(key) from None
            with contextlib.closing(answer["Body"]) as body:
                if answer["ContentLength"] < self.transfer.multipart_threshold:
                    with open(tmp, "wb") as out:
                        for block in body.iter_chunks(CHUNK):
                            out.write(block)
                    return
            self.client.download_file(self.bucket, self._key(key), tmp, Config=self.transfer)

    @_unavailable_on_outage
    def _head(self, key: str) -> dict[str, Any] | None:
        try:
            return self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise FileNotFoundError(key)
        return int(head["ContentLength"])

    def download_url(self, key: str, filename: str | None = None) -> str | None:
        params = {"Bucket": self.bucket, "Key": self._key(key)}
        if filename:
            params["ResponseContentDisposition"] = f'attachment; filename="{filename}"'
        return self.signer.generate_presigned_url("get_object", Params=params, ExpiresIn=self.url_seconds)

    @_unavailable_on_outage
    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=self._key(key))

    @contextmanager
    def writer(self, key: str, content_type: str | None = None, size_hint: int = 0) -> Iterator[Sink]:
        # S3 allows 10,000 parts: grow the part size for objects expected to be larger than 160 GiB
        part_size = max(16 * CHUNK, -(-size_hint // 9000))
        upload = MultipartUpload(self.client, self.bucket, self._key(key), content_type, part_size)
        try:
            yield Sink(upload.write)
            _unavailable_on_outage(lambda _self: upload.finish())(self)
        except BaseException:
            upload.abort()
            raise

    def _listing(self, prefix: str) -> Iterator[dict[str, Any]]:
        paginator = self.client.get_paginator("list_objects_v2")
        with contextlib.suppress(self.client.exceptions.NoSuchBucket):  # nothing stored yet
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/"):
                yield from page.get("Contents", [])

    @_unavailable_on_outage
    def delete_prefix(self, prefix: str) -> None:
        objects = [{"Key": o["Key"]} for o in self._listing(prefix)]
        for i in range(0, len(objects), 1000):  # the most one request may delete
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects[i : i + 1000]})

    @_unavailable_on_outage
    def usage(self, prefix: str) -> int:
        return sum(int(o["Size"]) for o in self._listing(prefix))

    @_unavailable_on_outage
    def abort_uploads(self, prefix: str = "", older_than: timedelta = timedelta(0)) -> list[str]:
        """A packager killed mid-zip leaves a multipart upload whose parts stay stored (and billed) until aborted;
        listing objects does not show them, so deleting a job's prefix does not remove them either."""
        cutoff = datetime.now(UTC) - older_than
        scope = self._key(prefix.rstrip("/")) + "/" if prefix else (f"{self.prefix}/" if self.prefix else "")
        aborted: list[str] = []
        pages = self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=scope)
        with contextlib.suppress(self.client.exceptions.NoSuchBucket):  # nothing stored yet
            for upload in (u for page in pages for u in page.get("Uploads", [])):
                if upload["Initiated"] <= cutoff:
                    self.client.abort_multipart_upload(
                        Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]
                    )
                    aborted.append(upload["Key"].removeprefix(f"{self.prefix}/") if self.prefix else upload["Key"])
        return aborted
