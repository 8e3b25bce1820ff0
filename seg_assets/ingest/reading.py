"""Each landing file as a relation DuckDB reads: the loader (both engines) maps, types and checks it from there.

Parquet is read in place with its own types (``read_parquet``); CSV is read without DuckDB's sniffer
(explicit dialect, every column VARCHAR, header parsed here), plus one overflow column and a NULL
sentinel, so that the loader's SQL can tell a missing field (a truncated row: NULL) from an empty one
(``''``) and spot rows with too many fields (overflow not NULL). A source's CSV dialect (source_config.CsvDialect)
sets the delimiter; a file of a source in another encoding than UTF-8 is decoded by Python's codec into a UTF-8 copy
first (DuckDB's reader knows UTF-8, UTF-16 and a Latin-1 that refuses Windows-1252's curly quotes and euro sign), unless
it is UTF-8 after all (:func:`_utf8_copy`).
"""

from __future__ import annotations

import codecs
import csv
import gzip
import io
import os
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path

import duckdb

from seg_assets.ingest.source_config import CONTRACT_CSV, CsvDialect
from seg_assets.ingest.sources import PARQUET_MAGIC
from seg_assets.warehouse import glob_escaped, sql_ident, sql_string

SRC = "_seg_ingest_src"  # temp table holding a CSV file as read
NULL_SENTINEL = "\x01"  # CSV nullstr: empty fields stay '', only padded (missing) fields become NULL
OVERFLOW = "_seg_overflow"  # one column past the header: not NULL <=> the row has too many fields
GZIP_CUT_SHORT = "Unexpected end of GZIP stream"  # DuckDB's error reading a .csv.gz cut short (ours says the same)


@dataclass(frozen=True)
class Source:
    names: list[str]  # column names as delivered, in file order
    idents: list[str]  # their SQL identifiers in SRC
    types: list[str]  # their DuckDB types in SRC
    row_expr: str  # SQL giving the 1-based data row number
    is_csv: bool
    relation: str  # what to select from: the temp table SRC (CSV) or read_parquet(...)
    note: str | None = None  # how the file was read, where that differs from its source's settings


def _path_lit(path: Path) -> str:
    """A file path for read_csv/read_parquet, which glob."""
    return sql_string(glob_escaped(path))


# Byte-order marks that say a file is not in its source's encoding (UTF-32 LE first: it starts like UTF-16 LE's)
_FOREIGN_BOMS = ((codecs.BOM_UTF32_LE, "UTF-32"), (codecs.BOM_UTF32_BE, "UTF-32"), (codecs.BOM_UTF16_LE, "UTF-16"),
                 (codecs.BOM_UTF16_BE, "UTF-16"))
_C1 = re.compile("[\x80-\x9f]")  # control characters no text holds: what cp1252's letters become in latin-1


def _cut_short() -> ValueError:
    """A gzip stream that ends early, said as DuckDB says it (staging.still_written reads the words)."""
    return ValueError(f"{GZIP_CUT_SHORT}: the file ends before its compressed stream does")


def _open(path: Path, fmt: str):
    return (gzip.open if fmt == "csv.gz" else open)(path, "rb")


def _csv_header(path: Path, fmt: str, dialect: CsvDialect) -> tuple[list[str] | None, bool]:
    """(the header's column names, or None for a file without one; whether the file starts with a UTF-8 byte-order
    mark, which says it is UTF-8 whatever its source's encoding)."""
    try:
        with _open(path, fmt) as handle:
            line = handle.readline(1 << 20)
    except EOFError:  # a gzip stream whose writer has written its header only
        raise _cut_short() from None
    for bom, name in _FOREIGN_BOMS:
        if line.startswith(bom):
            raise FileProblem(f"the file is {name} (its byte-order mark says so): save it as UTF-8 (or as the source's "
                             f"csv encoding, {dialect.encoding}) and land it again")
    utf8 = dialect.utf8 or line.startswith(codecs.BOM_UTF8)
    text = line.decode("utf-8-sig" if utf8 else dialect.encoding, errors="replace")
    if not text.strip():
        return None, utf8
    if "\r" in text.rstrip("\r\n"):  # the whole file read as its first line (csv's own error said nothing to do)
        raise FileProblem("the file's lines end in a carriage return alone (an old Mac export): save it with LF or CRLF "
                         "line ends and land it again")
    return [name.strip() for name in next(csv.reader([text], delimiter=dialect.delimiter))], utf8


def _decode_into(src, out, encoding: str, gz: bool) -> bool:
    """Decode ``src`` (a binary file) with ``encoding`` into ``out``; whether any character was not ASCII. Raises
    ValueError at the first byte the codec cannot decode, or that it decodes to a C1 control character."""
    decoder = codecs.getincrementaldecoder(encoding)()
    offset, wide = 0, False
    where = "of its uncompressed text" if gz else "of the file"
    while True:
        chunk = src.read(1 << 20)
        pending = len(decoder.getstate()[0])  # bytes of a character begun in the chunk before
        try:
            text = decoder.decode(chunk, final=not chunk)
        except UnicodeDecodeError as exc:
            at = offset - pending + exc.start
            raise FileProblem(f"not {encoding} encoded: byte {exc.object[exc.start]:#04x} at byte offset {at} {where} has "
                             f"no character in {encoding}; set the source's csv encoding in sources.yaml to the file's "
                             "own") from None
        if (c1 := _C1.search(text)) is not None:
            raise FileProblem(f"not {encoding} encoded: it holds {c1.group()!r}, a control character no text holds (in "
                             f"{encoding}); Windows files are cp1252: set the source's csv encoding in sources.yaml")
        wide = wide or not text.isascii()
        out.write(text)
        offset += len(chunk)
        if not chunk:
            return wide


def _utf8_copy(path: Path, fmt: str, encoding: str) -> tuple[Path, str | None]:
    """The file as a UTF-8 temp file (the caller deletes it; ``TMPDIR`` says where), and a note when it was read as
    UTF-8 rather than ``encoding``: a file with letters beyond ASCII that decodes as UTF-8 is UTF-8 (text in a
    single-byte code page practically never forms valid UTF-8 sequences), and decoding it with the source's code page
    would store every such letter garbled (``Zoë`` as ``ZoÃ«``: another user). One clear error at the first byte that
    decodes to nothing, and a gzip stream cut short reported as DuckDB reports it."""
    handle, temp = tempfile.mkstemp(prefix="seg-ingest-", suffix=".csv")
    try:
        with open(handle, "w", encoding="utf-8", newline="") as out:
            try:
                with _open(path, fmt) as src:
                    wide = _decode_into(src, out, "utf-8", fmt == "csv.gz")
                note = f"read as UTF-8, not {encoding}: the file is valid UTF-8" if wide else None
            except ValueError:  # not UTF-8: the source's own encoding
                out.seek(0)
                out.truncate()
                with _open(path, fmt) as src:
                    _decode_into(src, out, encoding, fmt == "csv.gz")
                note = None
    except EOFError:
        os.unlink(temp)
        raise _cut_short() from None
    except BaseException:
        os.unlink(temp)
        raise
    return Path(temp), note


class FileProblem(ValueError):
    """A landing file that cannot be read, in a line written for a person: the ledger shows it without the exception's
    class (a cut-short upload said "failed: ValueError: the Parquet file is damaged or cut short ...")."""

    for_people = True


# Folder names such as ``status=cancelled/`` are folders, not columns that override the file's own (DuckDB guesses
# Hive partitions otherwise)
PARQUET_OPTIONS = "hive_partitioning=false"
# Text stored as bare BINARY (Impala, Hive, older Spark) is text, not bytes to escape ('Zo\xC3\xAB' was a second user
# beside the CSV's 'Zoë'); bytes that are no UTF-8 (a raw UUID) keep their escaped form, value by value (DuckDB's
# binary_as_string failed the whole file on one of them)
BINARY_AS_TEXT = "coalesce(try(decode({c})), CAST({c} AS VARCHAR))"
ROW_COLUMN = "file_row_number"  # the column read_parquet adds (file_row_number=true): a file may not have its own


def _parquet_source(con: duckdb.DuckDBPyConnection, path: Path) -> Source:
    """A Parquet file read in place with its own types, its columns renamed ``c0..cN`` as a CSV's are: a file column
    named like one of the loader's own (``_row``, ``why``, ``v__amount``) is then just data."""
    read = f"read_parquet({_path_lit(path)}, {PARQUET_OPTIONS}"
    try:
        described = [(r[0], r[1]) for r in con.sql(f"DESCRIBE SELECT * FROM {read})").fetchall()]
    except duckdb.Error as exc:  # the footer (the schema) does not parse: "Footer length error", "Invalid data", ...
        why = str(exc).splitlines()[0].replace(f" '{path}'", "").replace(str(path), "the file")  # the line names the file
        raise FileProblem(f"the Parquet file is damaged or cut short ({why}): land it again, whole, under a new name") from None
    names = [n for n, _ in described]
    if any(n.lower() == ROW_COLUMN for n in names):
        raise FileProblem(f"the file has a column named {ROW_COLUMN}, a name DuckDB's Parquet reader keeps for itself: "
                         "rename that column and land the file again")
    # Spark's legacy INT96 times are UTC instants, which DuckDB reads as naive times: a source's timezone would shift them
    int96 = {r[0] for r in con.sql(f"SELECT name FROM parquet_schema({_path_lit(path)}) WHERE type = 'INT96'").fetchall()}
    int96 = {n for n, t in described if n in int96 and t == "TIMESTAMP"}
    idents = [f"c{i}" for i in range(len(names))]
    read_as = {n: f"timezone('UTC', {sql_ident(n)})" for n in int96}
    read_as |= {n: BINARY_AS_TEXT.format(c=sql_ident(n)) for n, t in described if t == "BLOB"}
    columns = "".join(f"{read_as.get(n, sql_ident(n))} AS {i}, " for n, i in zip(names, idents))
    described = [(n, "TIMESTAMP WITH TIME ZONE" if n in int96 else "VARCHAR" if t == "BLOB" else t) for n, t in described]
    relation = f"(SELECT {columns}{ROW_COLUMN} AS _seg_file_row FROM {read}, {ROW_COLUMN}=true))"
    return Source(names, idents, [t for _, t in described], "_seg_file_row + 1", False, relation)


def misnamed(path: Path, fmt: str) -> str | None:
    """What a file named for ``fmt`` really is, when its first bytes say another format (None: they agree)."""
    with open(path, "rb") as handle:
        head = handle.read(4)
    if not head:
        return None
    is_parquet, is_gzip = head == PARQUET_MAGIC, head[:2] == b"\x1f\x8b"
    if fmt == "parquet" and not is_parquet:
        what = "gzip-compressed (a .csv.gz?)" if is_gzip else "not a Parquet file (text? a CSV?)"
        return f"named .parquet but {what}: its first bytes are not Parquet's; land it under its own extension"
    if fmt != "parquet" and is_parquet:
        return "a Parquet file named as CSV: rename it to .parquet and land it again"
    if fmt == "csv" and is_gzip:
        return "gzip-compressed: rename it to .csv.gz and land it again"
    return None


def load_source(con: duckdb.DuckDBPyConnection, path: Path, fmt: str, dialect: CsvDialect = CONTRACT_CSV) -> Source | None:
    """Describe one file; a CSV is read into the temp table SRC (for rowid). None: a CSV without a header row."""
    con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
    if (wrong := misnamed(path, fmt)) is not None:
        raise FileProblem(wrong)
    if fmt == "parquet":
        return _parquet_source(con, path)
    header, utf8 = _csv_header(path, fmt, dialect)
    if header is None:
        return None
    copy, note = (None, None) if utf8 else _utf8_copy(path, fmt, dialect.encoding)
    if utf8 and not dialect.utf8:
        note = f"read as UTF-8, not {dialect.encoding}: the file starts with UTF-8's byte-order mark"
    idents = [f"c{i}" for i in range(len(header))]
    columns = "{" + ", ".join(f"'{c}': 'VARCHAR'" for c in [*idents, OVERFLOW]) + "}"
    options = (
        f"columns={columns}, header=true, auto_detect=false, delim={sql_string(dialect.delimiter)}, quote='\"', "
        f"escape='\"', null_padding=true, strict_mode=false, nullstr='{NULL_SENTINEL}', encoding='utf-8', "
        f"compression='{'gzip' if fmt == 'csv.gz' and copy is None else 'none'}'"
    )
    sql = f"CREATE TEMP TABLE {SRC} AS SELECT * FROM read_csv({_path_lit(copy or path)}, {options}"
    try:
        try:
            con.execute(sql + ")")
        except duckdb.Error as exc:  # quoted line breaks + null_padding need the single-threaded reader
            if "parallel=false" not in str(exc):
                raise
            con.execute(f"DROP TABLE IF EXISTS temp.{SRC}")
            con.execute(sql + ", parallel=false)")
    finally:
        if copy is not None:
            copy.unlink(missing_ok=True)
    if other_separator(header, dialect.delimiter) is None and (  # else staging says which csv: to set
            unclosed := _unclosed_quote(con, idents, dialect, path, fmt)) is not None:
        raise FileProblem(unclosed)
    # rowid follows insertion order, which DuckDB preserves (preserve_insertion_order): the file's row order.
    return Source(header, idents, ["VARCHAR"] * len(header), "rowid + 1", True, SRC, note)


def other_separator(header: list[str], delimiter: str) -> str | None:
    """The separator a CSV file is written with when its header read as one column holding it (``;`` read with
    ``,``): no mapping can fix that, only the source's ``csv: {delimiter: ...}``."""
    return next((s for s in ",;\t|" if len(header) == 1 and s in header[0] and s != delimiter), None)


def _line_of_row(path: Path, fmt: str, dialect: CsvDialect, rowid: int) -> int:
    """The file line a row starts on (``rowid`` counts rows as DuckDB read them): Python's csv reader splits the rows
    as DuckDB's does (a quote after the spaces of ", " opens a field in both), and skips blank lines as it does,
    which counting rows and their line breaks missed (a reviewer's stray quote on line 11 was named on line 9)."""
    with _open(path, fmt) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig" if dialect.utf8 else dialect.encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=dialect.delimiter, quotechar='"', doublequote=True, skipinitialspace=True)
        limit = csv.field_size_limit(2**31 - 1)  # a long closed value before the row is no error (it named its line)
        next(reader, None)  # the header
        row, start = -1, reader.line_num + 1
        try:
            for fields in reader:
                row += bool(fields)
                if fields and row == rowid:
                    return start
                start = reader.line_num + 1
        except csv.Error:  # the swallowing value outgrew csv's field limit (a reviewer's 128 KiB file): it starts here
            return start
        finally:
            csv.field_size_limit(limit)
    return start


def _open_at_end(path: Path, fmt: str, dialect: CsvDialect, last_row_line: int) -> bool:
    """Whether a quoted field is still open where the file ends, by Python's strict csv reader: its only way to tell
    a quote left open from one closed in the last row (which starts on ``last_row_line`` as DuckDB read it). A
    malformed row before it (``"ab"c``) is that row's: read on (counted as open, it refused a reviewer's good file
    whole, naming a line whose quote was closed). One inside it is the quote in question: the reader drops the rest
    of the line and would find the file closed (a naive export's ``"Monitor 27""`` swallowed the row after it)."""
    with _open(path, fmt) as raw:
        text = io.TextIOWrapper(raw, encoding="utf-8-sig" if dialect.utf8 else dialect.encoding, errors="replace", newline="")
        reader = csv.reader(text, delimiter=dialect.delimiter, quotechar='"', doublequote=True, skipinitialspace=True,
                            strict=True)
        limit = csv.field_size_limit(2**31 - 1)
        try:
            while True:
                try:
                    next(reader)
                except StopIteration:
                    return False
                except csv.Error as exc:  # a malformed row elsewhere ("ab"c) is that row's: read on
                    if "unexpected end of data" in str(exc) or reader.line_num >= last_row_line:
                        return True
        finally:
            csv.field_size_limit(limit)


def _unclosed_quote(con, idents: list[str], dialect: CsvDialect, path: Path, fmt: str) -> str | None:
    """The file's line where a double quote opens a field that is never closed, said as the fix (None: none). The
    lenient reader takes such a field as a value over line ends, so the rows after it were read as one value of one
    row, rejected, and counted nowhere (a tester's: 490 of 1,000 orders). A value over line ends is a stray quote
    when a line inside it reads as one of this file's rows (as many delimiters as they have, no field starting with
    a space unless theirs do), in a broken row (too many or too few fields) or in a whole one (the quote closed by a
    later field's closing quote, anywhere in the file: looking only at the last row lost a reviewer's rows silently);
    other quoted line breaks (an address, a review of several paragraphs) stay data. Known limit: a line of a long
    quoted value holding exactly a row's delimiters and no spaces (decimal commas: ``Maße 120,5 x 80,5 x 75,5 cm``)
    reads as a row, and its file fails, loudly, with this message. In whole rows it looks only at values at least half
    as long as the file's median row (what a value holding a row's fields is): DuckDB skips the rest by its string
    statistics, where looking for line breaks in every value cost a fifth of the read (0.3 s per 2M rows)."""
    columns, delimiter = [*idents, OVERFLOW], dialect.delimiter
    spans = " OR ".join(f"contains({c}, chr(10))" for c in columns)
    rows = con.sql(f"SELECT count(*) FROM {SRC}").fetchall()[0][0]
    # half the median row of the first 1,000, at most half the mean: a few long reviews raised the mean past a short
    # swallowed row, and its rows were lost unsaid (a reviewer's: 30 of 40)
    row_len = " + ".join(f"coalesce(length({c}), 0)" for c in idents)
    [(median,)] = con.sql(f"SELECT median({row_len}) FROM {SRC} WHERE rowid < 1000").fetchall()
    mean = path.stat().st_size // max(rows, 1) if fmt == "csv" else int(median or 0)  # a .gz file's size is compressed
    long = max(len(idents), min(mean, int(median or 0)) // 2)
    # a line that reads as a row: the delimiters of this file's rows (a full row's, or as many as its rows have when
    # they leave optional last columns out), no field starting with a space unless this file's fields do (", "):
    # prose, "soft, warm, cheap", is no row (a reviewer's multi-line review failed its file)
    fields = " + ".join(f"({c} IS NOT NULL)::INT" for c in idents)
    spaced = f"avg(({idents[1]} LIKE ' %')::DOUBLE)" if len(idents) > 1 else "0"
    typical, spaces = con.sql(f"SELECT mode({fields}), {spaced} FROM {SRC} WHERE rowid < 1000").fetchall()[0]
    d, d_class = re.escape(delimiter), ("\\" + delimiter if delimiter in "\\]^-" else delimiter)
    field = f"({' ?' if (spaces or 0) > 0.5 else ''}[^ \\n{d_class}][^\\n{d_class}]*)?"
    fewest = max(min(int(typical or len(idents)), len(idents)) - 1, 0)
    a_row = sql_string(f"\\n{field}({d}{field}){{{fewest},{len(idents) - 1}}}(\\n|$)")
    holds_row = " OR ".join(f"regexp_matches({c}, {a_row})" for c in columns)
    broken_or_long = (f"(({OVERFLOW} IS NOT NULL OR {idents[-1]} IS NULL) AND ({spans}) AND ({holds_row})) OR "
                      + " OR ".join(f"(length({c}) >= {long} AND regexp_matches({c}, {a_row}))" for c in columns))
    # the last row whatever its length: a quote left open to the end of the file swallows what follows it into the last
    # row read, and a short row swallowed there is under the length guard when most rows are long (a reviewer's)
    found = con.sql(f"""SELECT rowid, ({broken_or_long}) FROM {SRC} WHERE {broken_or_long} OR (rowid = {rows - 1} AND
                        ({holds_row})) ORDER BY rowid LIMIT 1""").fetchall()
    if not found:
        return None
    line = _line_of_row(path, fmt, dialect, found[0][0])
    if not found[0][1] and not _open_at_end(path, fmt, dialect, line):  # a short last row whose quoted lines were
        return None  # closed: a value over line ends, as an address is (its whole file was refused: a reviewer's)
    breaks = " + ".join(f"coalesce(length({c}) - length(replace({c}, chr(10), '')), 0)" for c in columns)
    [(inside,)] = con.sql(f"SELECT coalesce(sum({breaks}), 0) FROM {SRC} WHERE rowid = $r", params={"r": found[0][0]}).fetchall()
    return (f"line {line}: a double quote opens a field that is not closed, so the {inside} line(s) after it were read "
            "as one value: close the quote, or write a quote inside a quoted field as two (\"\"), and land the file "
            "again (nothing of this file was taken in)")
