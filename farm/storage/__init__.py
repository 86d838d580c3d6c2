"""Where uploads, frames, logs and zips live: `file://` or `s3://`. Nothing else in the farm imports boto3.

Keys are plain relative paths (`jobs/<id>/frames/0001.png`); one helper applies the URL's prefix. A missing key is
`FileNotFoundError` in both back ends, so callers never see a botocore error type.
"""

from __future__ import annotations

import contextlib
import functools
import io
import os
import shutil
import stat
import tempfile
import threading
import uuid
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import IO, Any, TypeVar
from urllib.parse import unquote, urlparse

import boto3
from boto3.exceptions import S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    ClientError,
    ConnectionClosedError,
    ConnectTimeoutError,
    EndpointConnectionError,
    IncompleteReadError,
    ReadTimeoutError,
    ResponseStreamingError,
)

from farm.config import Settings
from farm.hashing import CHUNK
from farm.hashing import sha256_file as sha256_file  # re-exported: the farm's own modules import it from here

T = TypeVar("T")


def regular_file(path: Path) -> bool:
    """Whether `path` is a plain file itself, not a link to one nor anything else: the only kind of file the farm
    takes from a folder Blender wrote into (an image there is stored, kept and deleted by the farm)."""
    try:
        return stat.S_ISREG(os.lstat(path).st_mode) and stat.S_ISDIR(os.lstat(path.parent).st_mode)
    except OSError:
        return False


class StorageUnavailable(ConnectionError):
    """The storage endpoint could not be reached or failed on its side (5xx): worth retrying."""


def _check_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValueError(f"bad storage key {key!r}")
    return key


def making_folder(action: Callable[[], T], folder: Path, source: str | os.PathLike | None = None) -> T:
    """Run `action`, which puts a file in `folder`; if the folder is missing (its first file), make it and run it
    again. Not checked before every file, which would cost a syscall each time. A missing `source` still raises."""
    try:
        return action()
    except FileNotFoundError:
        if source is not None and not os.path.exists(source):
            raise
        folder.mkdir(parents=True, exist_ok=True)
        return action()


@contextmanager
def replacing(target: Path) -> Iterator[str]:
    """A temporary file beside `target` that becomes `target` when the block ends (atomically), and is removed if
    it raises: a reader never sees a half-written file."""
    fd, tmp = making_folder(lambda: tempfile.mkstemp(prefix=".part-", dir=target.parent), target.parent)
    os.close(fd)
    try:
        yield tmp
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class Storage(ABC):
    """Blob storage with the few operations the farm needs."""

    url_prefix: str

    @abstractmethod
    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> None: ...

    @abstractmethod
    def open(self, key: str) -> IO[bytes]:
        """A stream to read the object; the caller closes it."""

    @abstractmethod
    def exists(self, key: str) -> bool: ...

    @abstractmethod
    def size(self, key: str) -> int: ...

    @abstractmethod
    def download_url(self, key: str, filename: str | None = None) -> str | None:
        """A URL a client can fetch directly (presigned for S3); None when the app must serve the bytes."""

    def browser_origin(self) -> str | None:
        """The origin (scheme://host[:port]) of download_url's URLs, which pages must be allowed to load images
        from; None when the app serves the bytes itself."""
        url = self.download_url("origin-probe")
        if url is None:
            return None
        parsed = urlparse(url)
        return f"{parsed.scheme}://{parsed.netloc}"

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove one object; a missing one is fine."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> None: ...

    @abstractmethod
    def ensure_ready(self) -> None:
        """Create what must exist before first use (the bucket, the folder)."""

    @abstractmethod
    def writer(self, key: str, content_type: str | None = None, size_hint: int = 0) -> AbstractContextManager[Sink]:
        """A stream to write the object as it is produced (the packager's zip): it appears whole when the block
        ends, and not at all if the block raises."""

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with tempfile.NamedTemporaryFile(prefix="farm-put-") as tmp:
            tmp.write(data)
            tmp.flush()
            self.put_file(key, tmp.name, content_type)

    def get_file(self, key: str, dest: str | os.PathLike) -> None:
        """Download to `dest` atomically: a reader never sees a half-written file."""
        with replacing(Path(dest)) as tmp, open(tmp, "wb") as out, self.open(key) as src:
            shutil.copyfileobj(src, out, CHUNK)

    def read_bytes(self, key: str) -> bytes:
        with self.open(key) as fh:
            return fh.read()


def _hard_link(path: str | os.PathLike, link: Path) -> bool:
    """False where `link` cannot be a hard link to `path` (another filesystem, or one without hard links)."""
    try:
        os.link(path, link)
    except FileNotFoundError:
        raise
    except OSError:
        return False
    return True


class FileStorage(Storage):
    def __init__(self, root: Path) -> None:
        self.root = root
        self.url_prefix = root.as_uri()

    def _path(self, key: str) -> Path:
        return self.root / _check_key(key)

    def ensure_ready(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)

    def put_file(self, key: str, path: str | os.PathLike, content_type: str | None = None) -> None:
        """A hard link where it can be (the same filesystem): a frame is not copied, and costs no new file. Callers
        never rewrite a file they stored (frames, uploads), or only append to it (a live Blender log)."""
        target = self._path(key)
        linked = target.with_name(f".link-{uuid.uuid4().hex}")
        if making_folder(lambda: _hard_link(path, linked), target.parent, source=path):
            os.replace(linked, target)
            return
        with replacing(target) as tmp:
            shutil.copyfile(path, tmp)

    def put_bytes(self, key: str, data: bytes, content_type: str | None = None) -> None:
        with replacing(self._path(key)) as tmp:
            Path(tmp).write_bytes(data)

    def open(self, key: str) -> IO[bytes]:
        return open(self._path(key), "rb")

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        return self._path(key).stat().st_size

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def download_url(self, key: str, filename: str | None = None) -> str | None:
        return None

    def delete(self, key: str) -> None:
        self._path(key).unlink(missing_ok=True)

    def delete_prefix(self, prefix: str) -> None:
        shutil.rmtree(self._path(prefix.rstrip("/")), ignore_errors=True)

    @contextmanager
    def writer(self, key: str, content_type: str | None = None, size_hint: int = 0) -> Iterator[Sink]:
        with replacing(self._path(key)) as tmp, open(tmp, "wb") as out:
            yield Sink(out.write)


class Sink(io.RawIOBase):
    """A write-only, unseekable stream that hands every write on and counts the bytes (zipfile writes data
    descriptors to it, so no seek is needed)."""

    def __init__(self, write: Callable[[bytes], object]) -> None:
        super().__init__()
        self._write, self.written = write, 0

    def writable(self) -> bool:
        return True

    def write(self, data: Any) -> int:
        size = memoryview(data).nbytes
        self._write(data)  # not copied: both writers copy what they keep before returning
        self.written += size
        return size


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
        extra = {"ContentType": content_type} if content_type else None
        self.client.upload_file(str(path), self.bucket, self._key(key), ExtraArgs=extra, Config=self.transfer)

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

    @_unavailable_on_outage
    def delete_prefix(self, prefix: str) -> None:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix.rstrip("/")) + "/"):
            objects = [{"Key": o["Key"]} for o in page.get("Contents", [])]
            if objects:
                self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": objects})


def open_storage(settings: Settings) -> Storage:
    parsed = urlparse(settings.storage_url)
    if parsed.scheme == "file":
        return FileStorage(Path(unquote(parsed.path)))
    return S3Storage(
        parsed.netloc,
        parsed.path,
        settings.s3_endpoint_url,
        public_url=settings.s3_public_url,
        url_seconds=settings.presign_seconds,
    )
