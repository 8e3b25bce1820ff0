"""Landing files as SQL: which files there are, their content hash, and each one as a relation to select from.

Parquet is read in place with its own types (``read_parquet``); CSV is read without DuckDB's sniffer
(explicit dialect, every column VARCHAR, header parsed here), plus one overflow column and a NULL
sentinel, so that the loader's SQL can tell a missing field (a truncated row: NULL) from an empty one
(``''``) and spot rows with too many fields (overflow not NULL).
"""

from __future__ import annotations

import csv
import gzip
import hashlib
from dataclasses import dataclass
from pathlib import Path

import duckdb

from seg_assets.ingest import contract as C
from seg_assets.ingest.source_config import SourceDef

SRC = "_seg_ingest_src"  # temp table holding a CSV file as read
NULL_SENTINEL = "\x01"  # CSV nullstr: empty fields stay '', only padded (missing) fields become NULL
OVERFLOW = "_seg_overflow"  # one column past the header: not NULL <=> the row has too many fields


@dataclass(frozen=True)
class Source:
    names: list[str]  # column names as delivered, in file order
    idents: list[str]  # their SQL identifiers in SRC
    types: list[str]  # their DuckDB types in SRC
    row_expr: str  # SQL giving the 1-based data row number
    is_csv: bool
    relation: str  # what to select from: the temp table SRC (CSV) or read_parquet(...)


def sql_string(value: str) -> str:
    return "'" + str(value).replace("'", "''") + "'"


def _path_lit(path: Path) -> str:
    """A file path for read_csv/read_parquet, which glob: '[', '*', '?' become one-character classes."""
    escaped = "".join(f"[{ch}]" if ch in "[*?" else ch for ch in str(path))
    return sql_string(escaped)


def _ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def file_sha256(path: Path, chunk_size: int = 1 << 20) -> tuple[str, int]:
    digest, size = hashlib.sha256(), 0
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
            size += len(chunk)
    return digest.hexdigest(), size


def file_format(path: Path) -> str | None:
    name = path.name.lower()
    return next((fmt for suffix, fmt in C.FORMATS if name.endswith(suffix)), None)


def discover_files(landing_dir: Path, sources: list[SourceDef]) -> tuple[list[tuple[SourceDef, Path, str]], list[str]]:
    """(source, path, format) of every landing file a source reads, sorted by relative name (then source
    order: two sources may read one folder); and the files no source reads or that are not data files."""
    found, ignored = [], []
    if not landing_dir.is_dir():
        return found, ignored
    for path in sorted((p for p in landing_dir.rglob("*") if p.is_file()), key=lambda p: p.relative_to(landing_dir).as_posix()):
        rel = path.relative_to(landing_dir).as_posix()
        fmt = file_format(path)
        readers = [s for s in sources if rel.startswith(s.folder + "/")]
        # '.'/'_' names are in-progress or marker files by the landing rule (automation/landing.py)
        if not readers or fmt is None or path.name.startswith((".", "_")):
            ignored.append(rel)
        else:
            found += [(source, path, fmt) for source in readers]
    return found, ignored


def _csv_header(path: Path, fmt: str) -> list[str] | None:
    opener = gzip.open if fmt == "csv.gz" else open
    with opener(path, "rb") as handle:
        line = handle.readline(1 << 20)
    text = line.decode("utf-8-sig")
    if not text.strip():
        return None
    return [name.strip() for name in next(csv.reader([text]))]


def load_source(con: duckdb.DuckDBPyConnection, path: Path, fmt: str) -> Source | None:
    """Describe one file; a CSV is read into the temp table SRC (for rowid). None: a CSV without a header row."""
    con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
    if fmt == "parquet":  # typed columns and file_row_number: read straight into the stage, no copy
        relation = f"read_parquet({_path_lit(path)}, file_row_number=true)"
        described = [(r[0], r[1]) for r in con.sql(f"DESCRIBE SELECT * FROM {relation}").fetchall()]
        described = [(n, t) for n, t in described if n != "file_row_number"]
        names = [n for n, _ in described]
        return Source(names, [_ident(n) for n in names], [t for _, t in described], "file_row_number + 1", False, relation)
    header = _csv_header(path, fmt)
    if header is None:
        return None
    idents = [f"c{i}" for i in range(len(header))]
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in [*idents, OVERFLOW]) + "}"
    options = (
        f"columns={columns}, header=true, auto_detect=false, delim=',', quote='\"', escape='\"', "
        f"null_padding=true, strict_mode=false, nullstr='{NULL_SENTINEL}', encoding='utf-8', "
        f"compression='{'gzip' if fmt == 'csv.gz' else 'none'}'"
    )
    sql = f"CREATE TEMP TABLE {SRC} AS SELECT * FROM read_csv({_path_lit(path)}, {options}"
    try:
        con.execute(sql + ")")
    except duckdb.Error as exc:  # quoted line breaks + null_padding need the single-threaded reader
        if "parallel=false" not in str(exc):
            raise
        con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
        con.execute(sql + ", parallel=false)")
    # rowid follows insertion order, which DuckDB preserves (preserve_insertion_order): the file's row order.
    return Source(header, idents, ["VARCHAR"] * len(header), "rowid + 1", True, SRC)
