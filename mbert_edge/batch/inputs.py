"""Input files in shards: JSONL and CSV as record-aligned byte ranges, Parquet as runs of row groups.

Planning scans each JSONL/CSV file once, in a stream, to find a record boundary every ``shard_rows`` rows;
a shard is then read alone (seek, read its byte range) so that memory stays bounded by the shard size, not
the input size. Blank lines are not rows. A CSV record ends at a newline outside double quotes (RFC 4180),
so quoted fields may hold newlines. Every row gets ``row_id``: its ordinal over all input files in order.

A row whose text cannot be used (bad JSON, a missing, null or non-string text, an empty text, a CSV record
with the wrong number of fields) is kept with an ``error``; it is never dropped.
"""

from __future__ import annotations

import csv
import io
import json
import os
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from mbert_edge.batch.errors import BatchError

FORMATS = ("jsonl", "csv", "parquet")
_EXTENSIONS = {".jsonl": "jsonl", ".ndjson": "jsonl", ".csv": "csv", ".parquet": "parquet", ".pq": "parquet"}
_BOM = b"\xef\xbb\xbf"


@dataclass(frozen=True)
class InputFile:
    """One input file as planned: its absolute path, format, size and modification time (for the fingerprint)."""

    path: str
    format: str
    size: int
    mtime_ns: int


@dataclass(frozen=True)
class Shard:
    """A unit of work and of commit: rows ``first_row .. first_row + rows - 1`` of one file.

    ``start``/``stop`` are byte offsets (JSONL, CSV) or row-group indices, stop exclusive (Parquet).
    """

    index: int
    file: str
    format: str
    start: int
    stop: int
    first_row: int
    rows: int

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (stored in the job plan)."""
        return asdict(self)


@dataclass
class ShardRows:
    """The rows of one shard as read: texts (``None`` where the row has an error), errors, ids, kept columns.

    ``ids`` and each ``keep`` value are Python lists (JSONL, CSV: str or None) or pyarrow arrays (Parquet).
    """

    texts: list[str | None]
    errors: list[str | None]
    ids: Any = None
    keep: dict[str, Any] = field(default_factory=dict)


def format_of(path: Path, forced: str | None) -> str:
    """The format of ``path``: ``forced`` when given, else from its extension."""
    if forced is not None:
        if forced not in FORMATS:
            raise BatchError(f"unknown input format {forced!r}: use one of {', '.join(FORMATS)}")
        return forced
    fmt = _EXTENSIONS.get(path.suffix.lower())
    if fmt is None:
        raise BatchError(
            f"{path}: cannot tell the format from the extension {path.suffix!r}; name it .jsonl, .csv or "
            ".parquet, or pass --format"
        )
    return fmt


def list_inputs(inputs: Sequence[str | os.PathLike[str]], forced_format: str | None = None) -> list[InputFile]:
    """Expand files and directories (every .jsonl/.ndjson/.csv/.parquet/.pq file below, sorted by path) in order.

    Names starting with ``.`` or ``_`` inside a directory are skipped (temporary files, markers).
    """
    if not inputs:
        raise BatchError("no input given: pass one or more files or directories")
    paths: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if p.is_dir():
            found = sorted(
                f
                for f in p.rglob("*")
                if f.is_file()
                and not any(part.startswith((".", "_")) for part in f.relative_to(p).parts)
                and (forced_format is not None or f.suffix.lower() in _EXTENSIONS)
            )
            if not found:
                raise BatchError(f"input directory {p} holds no .jsonl, .csv or .parquet file")
            paths += found
        elif p.is_file():
            paths.append(p)
        else:
            raise BatchError(f"input {p} does not exist")
    files = []
    for p in paths:
        st = p.stat()
        files.append(InputFile(str(p.resolve()), format_of(p, forced_format), st.st_size, st.st_mtime_ns))
    kinds = {f.format for f in files}
    if len(kinds) > 1:
        raise BatchError(f"inputs mix formats ({', '.join(sorted(kinds))}): score each format in its own job")
    return files


# ---------------------------------------------------------------------------------------------- splitting
def _csv_records(lines: Iterator[bytes]) -> Iterator[bytes]:
    """Join physical lines into CSV records: a record ends at a newline outside double quotes."""
    buf: list[bytes] = []
    quotes = 0
    for line in lines:
        buf.append(line)
        quotes += line.count(b'"')
        if quotes % 2 == 0:
            yield b"".join(buf)
            buf, quotes = [], 0
    if buf:
        yield b"".join(buf)


def _records(stream: io.BufferedIOBase | io.BytesIO, fmt: str) -> Iterator[bytes]:
    lines: Iterator[bytes] = iter(stream)  # splits at b"\n" only, in the scan and in the read alike
    return _csv_records(lines) if fmt == "csv" else lines


def _blank(record: bytes) -> bool:
    return not record.strip()


def _csv_header(path: str) -> tuple[list[str], int]:
    """The CSV header's column names and the byte offset where the data starts."""
    with open(path, "rb") as f:
        first = next(_records(f, "csv"), b"")
    offset = len(first)
    if first.startswith(_BOM):
        first = first[len(_BOM) :]
    text = first.decode("utf-8", errors="replace")
    rows = list(csv.reader(io.StringIO(text)))
    if not rows or not rows[0]:
        raise BatchError(f"{path}: the CSV file has no header line (the first line must name the columns)")
    return rows[0], offset


def _text_shards(f: InputFile, shard_rows: int, first_row: int, index: int) -> list[Shard]:
    start = 0
    if f.format == "csv":
        _, start = _csv_header(f.path)
    shards: list[Shard] = []
    with open(f.path, "rb") as stream:
        stream.seek(start)
        offset, shard_start, count = start, start, 0
        for record in _records(stream, f.format):
            offset += len(record)
            if not _blank(record):
                count += 1
                if count == shard_rows:
                    shards.append(Shard(index + len(shards), f.path, f.format, shard_start, offset, first_row, count))
                    first_row += count
                    shard_start, count = offset, 0
        if count:
            shards.append(Shard(index + len(shards), f.path, f.format, shard_start, offset, first_row, count))
    return shards


def _parquet_shards(f: InputFile, shard_rows: int, first_row: int, index: int) -> list[Shard]:
    import pyarrow.parquet as pq

    meta = pq.ParquetFile(f.path).metadata
    shards: list[Shard] = []
    group_start, rows = 0, 0
    for g in range(meta.num_row_groups):
        n = meta.row_group(g).num_rows
        if rows and rows + n > shard_rows:
            shards.append(Shard(index + len(shards), f.path, f.format, group_start, g, first_row, rows))
            first_row += rows
            group_start, rows = g, 0
        if not rows and n == 0:
            group_start = g + 1
            continue
        rows += n
    if rows:
        shards.append(Shard(index + len(shards), f.path, f.format, group_start, meta.num_row_groups, first_row, rows))
    return shards


def plan_shards(files: Sequence[InputFile], shard_rows: int) -> list[Shard]:
    """Cut the inputs into shards of at most ``shard_rows`` rows (Parquet: whole row groups, at least one)."""
    if shard_rows < 1:
        raise BatchError("shard_rows must be a positive int")
    shards: list[Shard] = []
    first_row = 0
    for f in files:
        make = _parquet_shards if f.format == "parquet" else _text_shards
        new = make(f, shard_rows, first_row, len(shards))
        shards += new
        first_row += sum(s.rows for s in new)
    return shards


# ---------------------------------------------------------------------------------------------- schemas
def check_columns(
    files: Sequence[InputFile], text_column: str, id_column: str | None, keep_columns: Sequence[str]
) -> dict[str, Any]:
    """Check that the named columns exist (CSV headers, Parquet schemas); return the id/kept columns' arrow types.

    JSONL is checked per row (a row without the text gets an error); its id and kept columns are strings
    (JSON values that are not strings are kept as their JSON text), as are CSV's.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    wanted = [c for c in (id_column, *keep_columns) if c is not None]
    types: dict[str, Any] = {c: pa.string() for c in wanted}
    for f in files:
        if f.format == "jsonl":
            continue
        if f.format == "csv":
            header, _ = _csv_header(f.path)
            names = set(header)
            for c in (text_column, *wanted):
                if c not in names:
                    raise BatchError(f"{f.path}: no column {c!r} in the CSV header ({', '.join(header)})")
            continue
        schema = pq.read_schema(f.path)
        for c in (text_column, *wanted):
            if c not in schema.names:
                raise BatchError(f"{f.path}: no column {c!r} in the Parquet schema ({', '.join(schema.names)})")
        t = schema.field(text_column).type
        if not (pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)):
            raise BatchError(f"{f.path}: the text column {text_column!r} is {t}, not a string column")
        for c in wanted:
            t = schema.field(c).type
            if f is files[0]:
                types[c] = t
            elif t != types[c]:
                raise BatchError(f"{f.path}: column {c!r} is {t} here but {types[c]} in {files[0].path}")
    return types


# ---------------------------------------------------------------------------------------------- reading
def _check_text(value: Any, column: str) -> str | None:
    """The error for a text value, or None when it can be scored."""
    if value is None:
        return f"{column!r} is null"
    if not isinstance(value, str):
        return f"{column!r} is {type(value).__name__}, not a string"
    if not value.strip():
        return f"{column!r} is empty or only whitespace"
    return None


def _as_str(value: Any) -> str | None:
    if value is None or isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


def read_shard(shard: Shard, text_column: str, id_column: str | None, keep_columns: Sequence[str]) -> ShardRows:
    """Read one shard's rows (its byte range or row groups only)."""
    if shard.format == "parquet":
        return _read_parquet(shard, text_column, id_column, keep_columns)
    with open(shard.file, "rb") as f:
        f.seek(shard.start)
        data = f.read(shard.stop - shard.start)
    records = [r for r in _records(io.BytesIO(data), shard.format) if not _blank(r)]
    if len(records) != shard.rows:
        raise BatchError(
            f"{shard.file}: shard {shard.index} now holds {len(records)} rows where {shard.rows} were planned; the "
            "file changed while the job ran (score it again with --restart)"
        )
    out = ShardRows([], [], [] if id_column else None, {c: [] for c in keep_columns})
    header = _csv_header(shard.file)[0] if shard.format == "csv" else []
    for n, record in enumerate(records):
        if shard.start == 0 and n == 0 and record.startswith(_BOM):
            record = record[len(_BOM) :]
        obj, error = _parse(record, shard.format, header)
        text = obj.get(text_column) if obj is not None else None
        if error is None and obj is not None and text_column not in obj:
            error = f"no {text_column!r} field"
        if error is None:
            error = _check_text(text, text_column)
        out.texts.append(text if error is None else None)
        out.errors.append(error)
        if id_column:
            out.ids.append(_as_str(obj.get(id_column)) if obj is not None else None)
        for c in keep_columns:
            out.keep[c].append(_as_str(obj.get(c)) if obj is not None else None)
    return out


def _parse(record: bytes, fmt: str, header: list[str]) -> tuple[dict[str, Any] | None, str | None]:
    try:
        line = record.decode("utf-8")
    except UnicodeDecodeError as exc:
        return None, f"not valid UTF-8 ({exc.reason} at byte {exc.start})"
    if fmt == "jsonl":
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as exc:
            return None, f"bad JSON: {exc.msg} (column {exc.colno})"
        if not isinstance(obj, dict):
            return None, f"a JSON {type(obj).__name__}, not an object"
        return obj, None
    try:
        rows = list(csv.reader(io.StringIO(line), strict=True))
    except csv.Error as exc:
        return None, f"bad CSV record: {exc}"
    fields = rows[0] if rows else []
    obj = dict(zip(header, fields, strict=False))  # what can be matched stays (the id column, for one)
    if len(fields) != len(header):
        return obj, f"the CSV record has {len(fields)} fields, the header {len(header)}"
    return obj, None


def _read_parquet(shard: Shard, text_column: str, id_column: str | None, keep_columns: Sequence[str]) -> ShardRows:
    import pyarrow.parquet as pq

    columns = list(dict.fromkeys([text_column, *([id_column] if id_column else []), *keep_columns]))
    table = pq.ParquetFile(shard.file).read_row_groups(list(range(shard.start, shard.stop)), columns=columns)
    if table.num_rows != shard.rows:
        raise BatchError(
            f"{shard.file}: shard {shard.index} now holds {table.num_rows} rows where {shard.rows} were planned; the "
            "file changed while the job ran (score it again with --restart)"
        )
    texts = table.column(text_column).to_pylist()
    errors = [_check_text(t, text_column) for t in texts]
    return ShardRows(
        [t if e is None else None for t, e in zip(texts, errors, strict=True)],
        errors,
        table.column(id_column).combine_chunks() if id_column else None,
        {c: table.column(c).combine_chunks() for c in keep_columns},
    )
