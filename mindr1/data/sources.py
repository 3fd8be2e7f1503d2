"""Input files for preprocessing: resolve ``--input`` and cut the rows into chunks for the workers.

``--input`` is a file, a directory (every supported file in it, sorted), a glob, or ``FORMAT@PATH``
(``json@``, ``jsonl@``, ``parquet@``, ``arrow@``) to force the format of files whose names do not
say it. JSON-lines chunks travel to the workers as raw bytes, so decoding and JSON parsing run in
parallel and a bad line is reported by its 1-based line number; the main process only cuts the
file into blocks of whole lines (about ``--chunk-size`` lines each, from the average line length of
the file's start), so it stays cheap next to the workers. A ``.json`` file starting with
``[`` is one JSON array (elements numbered from 0); otherwise it is read as JSON lines. Parquet and
Arrow rows are numbered from 0.
"""
from __future__ import annotations

import glob
import json
import os
from dataclasses import dataclass
from typing import Iterator

BOM = b"\xef\xbb\xbf"
FORMATS = {".jsonl": "jsonl", ".json": "json", ".parquet": "parquet", ".arrow": "arrow"}


class DataError(ValueError):
    """Bad input: the message names the file, line/row and key, and what was expected."""


@dataclass
class Chunk:
    """A slice of one input file: ``data`` (whole JSONL lines, raw bytes) or ``rows`` (decoded objects)."""

    path: str
    unit: str          # "line" (1-based) or "row"/"element" (0-based)
    start: int         # number of the first item
    data: bytes | None = None
    rows: list | None = None

    def lines(self) -> list[bytes]:
        lines = self.data.split(b"\n")
        return lines[:-1] if lines and not lines[-1] else lines


def _format_of(path: str, forced: str | None) -> str:
    if forced:
        return forced
    ext = os.path.splitext(path)[1].lower()
    if ext not in FORMATS:
        raise DataError(f"{path}: unsupported file type {ext!r}; expected one of {sorted(FORMATS)} "
                        "or a FORMAT@PATH input such as json@/data/file.txt")
    return FORMATS[ext]


def resolve_inputs(spec: str) -> list[tuple[str, str]]:
    """``[(path, format)]`` for ``--input``; an error if nothing matches."""
    forced = None
    if "@" in spec and spec.split("@", 1)[0] in set(FORMATS.values()):
        forced, spec = spec.split("@", 1)
    if os.path.isdir(spec):
        paths = sorted(os.path.join(spec, n) for n in os.listdir(spec)
                       if forced or os.path.splitext(n)[1].lower() in FORMATS)
        paths = [p for p in paths if os.path.isfile(p)]
    elif os.path.isfile(spec):
        paths = [spec]
    else:
        paths = sorted(p for p in glob.glob(spec) if os.path.isfile(p))
    if not paths:
        raise DataError(f"--input {spec!r}: no such file, or no {sorted(FORMATS)} file in that directory/glob")
    return [(p, _format_of(p, forced)) for p in paths]


def _is_json_array(path: str) -> bool:
    with open(path, "rb") as fh:
        head = fh.read(4096).lstrip(BOM + b" \t\r\n")
    return head.startswith(b"[")


def _table_error(path: str, fmt: str, exc: BaseException) -> DataError:
    return DataError(f"{path}: cannot read as {fmt}: {type(exc).__name__}: {exc}")


def count_rows(files: list[tuple[str, str]]) -> int | None:
    """Rows to expect (for the ETA), cheaply; None when a file's count needs a full parse."""
    total = 0
    for path, fmt in files:
        if fmt == "parquet":
            import pyarrow as pa
            import pyarrow.parquet as pq

            try:
                total += pq.ParquetFile(path).metadata.num_rows
            except (OSError, ValueError, pa.ArrowException) as exc:
                raise _table_error(path, fmt, exc) from None
        elif fmt in ("jsonl", "json") and not _is_json_array(path):
            with open(path, "rb") as fh:
                lines, last = 0, b"\n"
                for block in iter(lambda: fh.read(1 << 24), b""):
                    lines += block.count(b"\n")
                    last = block[-1:]
                total += lines + (last != b"\n")
        else:
            return None
    return total


def _jsonl_chunks(path: str, size: int) -> Iterator[Chunk]:
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
        fh.seek(0)
        block = max(1, size * len(head) // max(head.count(b"\n"), 1))  # bytes for ~size lines
        start = 1
        while True:
            data = fh.read(block)
            if not data:
                return
            if start == 1 and data.startswith(BOM):
                data = data[len(BOM):]  # a UTF-8 byte order mark is not part of line 1
            if not data.endswith(b"\n"):
                data += fh.readline()  # complete the last line
            yield Chunk(path, "line", start, data=data)
            start += data.count(b"\n")


def _json_array_chunks(path: str, size: int) -> Iterator[Chunk]:
    with open(path, "rb") as fh:
        raw = fh.read()
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw[: exc.start].count(b"\n") + 1
        raise DataError(f"{path} line {line}: non_utf8: bytes that are not UTF-8 at byte {exc.start}") from None
    try:
        rows = json.loads(text)
    except RecursionError:
        raise DataError(f"{path}: too_deep: JSON nested deeper than the parser allows (a JSON array file must "
                        "parse as a whole; use JSON lines to skip bad rows)") from None
    except json.JSONDecodeError as exc:
        # One array cannot be parsed around a bad element, so this stops even with --skip-invalid.
        raise DataError(f"{path} line {exc.lineno} column {exc.colno}: malformed_json: {exc.msg} "
                        "(a JSON array file must parse as a whole; use JSON lines to skip bad rows)") from None
    if not isinstance(rows, list):
        raise DataError(f"{path}: expected a JSON array of objects or JSON lines, got {type(rows).__name__}")
    for start in range(0, len(rows), size):
        yield Chunk(path, "element", start, rows=rows[start:start + size])


def _arrow_batches(path: str, fmt: str, size: int):
    import pyarrow as pa

    if fmt == "parquet":
        import pyarrow.parquet as pq

        yield from pq.ParquetFile(path).iter_batches(batch_size=size)
        return
    try:  # HF datasets' save_to_disk writes the IPC stream format; plain files use the file format
        reader = pa.ipc.open_stream(path)
    except pa.ArrowInvalid:
        reader = pa.ipc.open_file(path)
        for i in range(reader.num_record_batches):
            yield reader.get_batch(i)
        return
    yield from reader


def _table_chunks(path: str, fmt: str, size: int) -> Iterator[Chunk]:
    start = 0
    try:
        for batch in _arrow_batches(path, fmt, size):
            for offset in range(0, batch.num_rows, size):
                rows = batch.slice(offset, size).to_pylist()
                yield Chunk(path, "row", start, rows=rows)
                start += len(rows)
    except DataError:
        raise
    except (OSError, ValueError, TypeError, KeyError, NotImplementedError, RecursionError) as exc:
        # pyarrow's errors (ArrowInvalid, ArrowIOError, ...) derive from these builtins
        raise _table_error(path, fmt, exc) from None


def iter_chunks(files: list[tuple[str, str]], size: int) -> Iterator[Chunk]:
    """Every row of every input file, in order, ``size`` rows per chunk."""
    for path, fmt in files:
        if fmt in ("json", "jsonl"):
            yield from (_json_array_chunks if _is_json_array(path) else _jsonl_chunks)(path, size)
        else:
            yield from _table_chunks(path, fmt, size)
