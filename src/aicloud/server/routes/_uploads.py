"""Streaming request bodies into the blob store, multipart or raw, never held in memory.

The body is parsed as it arrives (``python-multipart``'s push parser for
``multipart/form-data``), buffered into blocks of a few MiB, and each block is handed to
the encrypting blob writer in a worker thread, so the event loop never blocks on disk or
crypto. Exceeding ``max_bytes`` aborts the writer and raises 413.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from python_multipart.exceptions import MultipartParseError
from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.requests import ClientDisconnect, Request

from aicloud.blobs import BlobInfo, BlobStore, BlobWriter
from aicloud.errors import BadRequestError, PayloadTooLargeError

BLOCK = 4 * 1024 * 1024
MAX_FIELD_BYTES = 4096


@dataclass
class Upload:
    """A stored upload: the blob, the client's file name, and small form fields."""

    blob: BlobInfo
    filename: str
    fields: dict[str, str] = field(default_factory=dict)


def _too_large(limit: int) -> PayloadTooLargeError:
    return PayloadTooLargeError(
        f"the upload is larger than the limit of {limit} bytes (AICLOUD_MAX_UPLOAD_BYTES)",
        details={"limit": limit},
    )


class _BlockSink:
    """Collects bytes and flushes full blocks to the blob writer off the event loop."""

    def __init__(self, writer: BlobWriter, limit: int) -> None:
        self.writer = writer
        self.limit = limit
        self.buf = bytearray()
        self.total = 0

    def add(self, data: bytes | memoryview) -> None:
        self.total += len(data)
        if self.total > self.limit:
            raise _too_large(self.limit)
        self.buf += data

    async def flush(self, force: bool = False) -> None:
        if self.buf and (force or len(self.buf) >= BLOCK):
            block, self.buf = bytes(self.buf), bytearray()
            await run_in_threadpool(self.writer.write, block)


class _FormState:
    """Callbacks of the multipart parser: the ``file`` part goes to the sink, small fields to a dict."""

    def __init__(self, sink: _BlockSink) -> None:
        self.sink = sink
        self.fields: dict[str, str] = {}
        self.filename: str | None = None
        self.file_parts = 0
        self.ended = False  # the closing boundary was seen
        self._header_field = bytearray()
        self._header_value = bytearray()
        self._headers: dict[str, bytes] = {}
        self._name: str | None = None
        self._is_file = False
        self._value = bytearray()

    def callbacks(self) -> dict[str, object]:
        return {
            "on_part_begin": self._part_begin,
            "on_header_field": lambda d, s, e: self._header_field.extend(d[s:e]),
            "on_header_value": lambda d, s, e: self._header_value.extend(d[s:e]),
            "on_header_end": self._header_end,
            "on_headers_finished": self._headers_finished,
            "on_part_data": self._part_data,
            "on_part_end": self._part_end,
            "on_end": self._end,
        }

    def _part_begin(self) -> None:
        self._headers = {}
        self._value = bytearray()

    def _header_end(self) -> None:
        self._headers[self._header_field.decode("latin-1").lower()] = bytes(self._header_value)
        self._header_field = bytearray()
        self._header_value = bytearray()

    def _headers_finished(self) -> None:
        _, options = parse_options_header(self._headers.get("content-disposition", b""))
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        self._is_file = self._name == "file"
        if self._is_file:
            self.file_parts += 1
            if self.file_parts > 1:
                raise BadRequestError("send exactly one part named 'file'")
            self.filename = options.get(b"filename", b"upload").decode("utf-8", "replace")

    def _part_data(self, data: bytes, start: int, end: int) -> None:
        if self._is_file:
            self.sink.add(memoryview(data)[start:end])
        else:
            self._value.extend(data[start:end])
            if len(self._value) > MAX_FIELD_BYTES:
                raise BadRequestError(f"form field {self._name!r} is longer than {MAX_FIELD_BYTES} bytes")

    def _part_end(self) -> None:
        if not self._is_file and self._name:
            self.fields[self._name] = self._value.decode("utf-8", "replace")

    def _end(self) -> None:
        self.ended = True


async def receive_upload(
    request: Request, blobs: BlobStore, max_bytes: int, filename: str = "upload"
) -> Upload:
    """Store the request body as one blob. ``multipart/form-data`` must carry a ``file`` part;
    any other content type is taken as the raw file (``filename`` from the query)."""
    declared = request.headers.get("content-length") or ""
    if declared.isascii() and declared.isdigit() and int(declared) > max_bytes + 64 * 1024:
        raise _too_large(max_bytes)
    ctype, options = parse_options_header(request.headers.get("content-type", ""))
    writer = blobs.writer()
    sink = _BlockSink(writer, max_bytes)
    form: _FormState | None = None
    parser: MultipartParser | None = None
    if ctype == b"multipart/form-data":
        boundary = options.get(b"boundary")
        if not boundary:
            raise BadRequestError("multipart/form-data without a boundary")
        form = _FormState(sink)
        parser = MultipartParser(boundary, form.callbacks())  # type: ignore[arg-type]
    try:
        async for chunk in request.stream():
            if parser is not None:
                parser.write(chunk)
            else:
                sink.add(chunk)
            await sink.flush()
        if parser is not None:
            parser.finalize()
        if form is not None and not form.ended:
            # python-multipart's finalize() does not check this: a body cut short would be stored whole.
            raise BadRequestError(
                "the multipart body ends without its closing boundary: the upload is truncated"
            )
        await sink.flush(force=True)
        if form is not None and form.file_parts == 0:
            raise BadRequestError("the multipart body has no part named 'file'")
        info = await run_in_threadpool(writer.commit)
    except MultipartParseError as exc:
        writer.abort()
        raise BadRequestError(f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        writer.abort()
        raise BadRequestError("the client disconnected before the upload finished") from None
    except BaseException:
        writer.abort()
        raise
    name = (form.filename if form is not None else None) or filename
    return Upload(blob=info, filename=name, fields=form.fields if form is not None else {})
