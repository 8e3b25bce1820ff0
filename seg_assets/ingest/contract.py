"""The raw data contract (../shared/DATA_CONTRACT.md) as column specs, and the DDL of the ingest tables.

One :class:`TableSpec` per landing folder says which columns exist, how each one is typed and which
rules reject a row; ``row_rules.column_sql`` turns a column's rules into the SQL the loader runs (first
failing rule wins). The checks and the asset column schemas read the same specs, so a contract change
is made here only.

Conventions (documented decisions):

* A column whose *value* is required (ids, timestamps, amount, items, enums) must be present in the
  file; a column whose value may be empty (``category``, ``discount``, ``product_id``, ``country``,
  ``channel``, ``email``) may also be absent from a file and is then treated as empty.
* Strings are trimmed; an empty optional string is stored as NULL (not ``''``).
* Enum values are matched case-insensitively and stored in lower case.
* Timestamps are stored as naive UTC ``TIMESTAMP``; values without an offset are read as UTC (or in the
  source's ``timezone``, sources.yaml).
* A ``derived`` column is computed by ingestion, never delivered (``clicks.funnel_stage``); a ``key_from``
  id may be absent from a file and is then derived from the row's values (see the loader).
"""

from __future__ import annotations

from dataclasses import dataclass

from seg_assets.ingest.events import FUNNEL_STAGES

# Column kinds understood by the loader's SQL builder.
ID, STRING, TIMESTAMP, DECIMAL, INTEGER, ENUM = "id", "string", "timestamp", "decimal", "integer", "enum"

SQL_TYPES = {
    ID: "VARCHAR",
    STRING: "VARCHAR",
    TIMESTAMP: "TIMESTAMP",
    DECIMAL: "DECIMAL(12,2)",
    INTEGER: "INTEGER",
    ENUM: "VARCHAR",
}

ORDER_STATUSES = ("completed", "cancelled", "returned")
# A delivered value holding an e-mail address (a tracking mistake: a referrer in `channel`, an address as a category; in
# a URL its @ is %40): a local part (or a quoted one), then a domain of dot-separated labels ending in a name of two or
# more characters that are no digit or ASCII punctuation (or an IP literal). A local part holds no '/?#&=' (the pattern
# is searched for, so an address in a URL matches from the character after them: 'https://www.tiktok.com/@brand.de'
# holds no address, '?email=jane%40example.com' does), a label no ASCII punctuation but '-' and '_'. Otherwise the parts
# are "anything but a separator", listed in ASCII, not Unicode classes: \p{L} and \p{N} depend on the engine's Unicode
# version (DuckDB's RE2 knows 3,919 letters Java 17's regex on Spark does not: 'ⰯⰯ@example.com' was an address on one
# engine and a category on the other, a tester's). One syntax for both engines (sqlglot doubles the backslashes in
# Spark's string literal). The staging views turn such a dimension value (category, country, channel) into NULL, so no
# feature, segment or BI table holds one; their SQL calls holds_email_sql as a Jinja macro, behind a contains() guard:
# the regular expression on every click cost 2 s more per 30M rows, the guard 1 s.
_SEPARATORS = r' \t\r\n\f"@<>(),;:\[\]'
_URL_PUNCTUATION = r'/?#&='
_LABEL_PUNCTUATION = r'!#$%&*+/=?^`{|}~'
EMAIL_LIKE = (rf'("[^"]+"|[^{_SEPARATORS}{_URL_PUNCTUATION}]+)(@|%40)(\[(IPv6:)?[0-9A-Fa-f.:]+\]|'
              rf'[^{_SEPARATORS}.{_LABEL_PUNCTUATION}]+([.][^{_SEPARATORS}.{_LABEL_PUNCTUATION}]+)*'
              rf'[.][^{_SEPARATORS}.{_LABEL_PUNCTUATION}0-9_-]{{2,}})')


AT_SIGNS = ("@", "%40")  # an address's '@', plain or URL-encoded: what may be an address anywhere it is not kept


def has_at_sign_sql(column: str) -> str:
    """SQL: ``column`` holds an '@', plain or URL-encoded: the cheap guard before the pattern, and what user ids,
    rejected values and reasons hash (anything that may be an address: hashing loses nothing there)."""
    return " OR ".join(f"contains({column}, '{a}')" for a in AT_SIGNS)


def holds_email_sql(column: str) -> str:
    """SQL: ``column`` holds an e-mail address (:data:`EMAIL_LIKE`, behind the cheap ``contains`` guard): a dimension
    value turned NULL (losing a value, so only a real address). The staging SQL models call it as the Jinja macro
    ``{{ holds_email('column') }}`` (features/sql_files.render_sql)."""
    return f"({has_at_sign_sql(column)}) AND regexp_matches({column}, '{EMAIL_LIKE}')"


USER_ID = "user_id"  # every table's user column: a value holding an '@' is taken in as its sha256
ANONYMOUS_ID = "anonymous_id"  # a click's device id: a user id until a login links it (staging.identities)
USER_ID_COLUMNS = (USER_ID, ANONYMOUS_ID)  # hashed alike, so a device id compares with the user ids it stands for


def user_id_sql(column: str) -> str:
    """SQL of a delivered user id as stored: an id holding an '@' (shops that key customers by address; also
    ``eve@localhost``) becomes its sha256 in every table alike, so the tables still join, and it is the hash rejected
    rows and reasons carry for it (one rule: :func:`has_at_sign_sql`)."""
    return f"CASE WHEN {has_at_sign_sql(column)} THEN sha256({column}) ELSE {column} END"


def without_email_sql(column: str) -> str:
    """SQL of ``column`` with a value holding an e-mail address read as NULL (what the staging views do), for the
    Python-built SQL that reads a raw table's dimension column itself."""
    return f"CASE WHEN {holds_email_sql(column)} THEN NULL ELSE {column} END"


@dataclass(frozen=True)
class Column:
    name: str
    kind: str
    required: bool  # value required => column required in the file
    description: str
    enum: tuple[str, ...] = ()
    min_value: float | None = None  # inclusive lower bound for numbers
    max_value: float | None = None  # inclusive upper bound for numbers
    empty_default: str | None = None  # SQL literal used when an optional value is empty
    pii: bool = False  # never stored in clear outside raw.<table>
    type_override: str | None = None  # a DuckDB type other than the kind's default (e.g. prices with 4 decimals)
    derived: bool = False  # computed by ingestion, never read from a file
    key_from: tuple[str, ...] = ()  # an id that may be absent: derived from these columns' values
    file_names: tuple[str, ...] = ()  # other names a file may use (the contract's `group` is an SQL keyword)

    @property
    def sql_type(self) -> str:
        return self.type_override or SQL_TYPES[self.kind]

    @property
    def file_name(self) -> str:
        """The name the data contract gives a file's column: what messages to a person say (the rule ids keep ``name``)."""
        return self.file_names[0] if self.file_names else self.name


@dataclass(frozen=True)
class TableSpec:
    name: str
    id_column: str
    columns: tuple[Column, ...]
    description: str
    # A row of it can change after delivery (an order cancelled, a customer's country, a review edited): a source may
    # then keep the latest delivery of an id (sources.yaml `keep: latest`). Events (clicks, sends) never change.
    updatable: bool = False

    @property
    def qualified(self) -> str:
        return f"raw.{self.name}"

    @property
    def column_names(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns)

    @property
    def required_columns(self) -> tuple[str, ...]:
        """Columns whose value is required (a file must deliver them, unless derivable)."""
        return tuple(c.name for c in self.columns if c.required)

    @property
    def file_required_columns(self) -> tuple[str, ...]:
        """Columns a file (or its source's mapping) must provide."""
        return tuple(c.name for c in self.columns if c.required and not c.derived and not c.key_from)

    @property
    def timestamp_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.kind == TIMESTAMP)

    @property
    def pii_columns(self) -> tuple[str, ...]:
        return tuple(c.name for c in self.columns if c.pii)

    def column(self, name: str) -> Column:
        return next(c for c in self.columns if c.name == name)

    def ddl(self) -> str:
        """The raw table. Its id column is unique, so DuckDB's dictionary compression can never pay on it, yet
        every segment is analysed for it: ZSTD, named, skips that (cold load of 30M clicks -6 % wall, file +10 %)."""
        cols = [
            f"{c.name} {c.sql_type}{' USING COMPRESSION zstd' if c.name == self.id_column else ''}"
            f"{' NOT NULL' if c.required or c.empty_default is not None else ''}"
            for c in self.columns
        ]
        cols += ["_file_id BIGINT NOT NULL", "_row BIGINT NOT NULL"]
        return f"CREATE TABLE IF NOT EXISTS {self.qualified} (\n  " + ",\n  ".join(cols) + "\n)"


ORDERS = TableSpec(
    name="orders",
    id_column="order_id",
    description="Orders from the landing zone, typed and deduplicated by order_id (first delivery wins, or the latest with keep: latest).",
    columns=(
        Column("order_id", ID, True, "Order id, unique."),
        Column("user_id", ID, True, "Customer who placed the order."),
        Column("order_ts", TIMESTAMP, True, "Order time, naive UTC."),
        Column("amount", DECIMAL, True, "Order total after discount, >= 0.", min_value=0),
        Column("items", INTEGER, True, "Number of items, >= 1.", min_value=1),
        Column("category", STRING, False, "Main product category; NULL when empty."),
        Column("discount", DECIMAL, False, "Discount, >= 0; empty means 0.", min_value=0, empty_default="0"),
        Column("status", ENUM, True, "One of " + ", ".join(ORDER_STATUSES) + ".", enum=ORDER_STATUSES),
    ),
    updatable=True,
)

CLICKS = TableSpec(
    name="clicks",
    id_column="event_id",
    description="Click events from the landing zone, typed and deduplicated by event_id (first delivery wins).",
    columns=(
        Column("event_id", ID, True, "Event id, unique; when a file has none, md5 of the event's typed values and "
               "its occurrence among identical rows of the file (a re-delivered file still dedupes, in any format).",
               key_from=("user_id", "session_id", "event_ts", "event_type", "product_id", "category")),
        Column("user_id", ID, True, "User who clicked."),
        Column("session_id", ID, True, "Session id."),
        Column("event_ts", TIMESTAMP, True, "Event time, naive UTC."),
        Column("event_type", STRING, True, "Event name as delivered (trimmed): any name is accepted."),
        Column("funnel_stage", ENUM, True, "Stage of event_type: " + ", ".join(FUNNEL_STAGES) + " (ingest/events.py "
               "and the source's event_types).", enum=FUNNEL_STAGES, derived=True),
        Column("product_id", STRING, False, "Product id; NULL when empty (search events)."),
        Column("category", STRING, False, "Category; NULL when empty."),
        Column(ANONYMOUS_ID, ID, False, "The tracker's device or cookie id (Segment's anonymousId, GA4's user_pseudo_id, "
               "Snowplow's domain_userid); NULL when empty. A row carrying it and another user_id (a login) links the "
               "device to that user: the device's anonymous rows (user_id = anonymous_id) are theirs "
               "(staging.identities)."),
    ),
)

ORDER_ITEMS = TableSpec(
    name="order_items",
    id_column="line_id",
    description="Order lines (optional; orders at line grain). staging.line_orders derives one order per order_id "
    "not delivered as an order row (amount = sum(quantity * unit_price), items = sum(quantity)); product ids stay here for baskets.",
    columns=(
        Column("line_id", ID, True, "Line id; when a file has none, md5 of the line's typed values and its "
               "occurrence among identical lines of the file (a re-delivered file still dedupes, in any format; genuine "
               "repeats are kept).",
               key_from=("order_id", "user_id", "order_ts", "product_id", "quantity", "unit_price", "status")),
        Column("order_id", ID, True, "The order (invoice) the line belongs to."),
        Column("user_id", ID, True, "Customer who placed the order."),
        Column("order_ts", TIMESTAMP, True, "Order time, naive UTC."),
        Column("product_id", ID, True, "Product id (stock code)."),
        # Bounded so that any order of lines adds up exactly (a tester's 2,000,000 x 9,999,999,999 overflowed DuckDB's
        # decimal product and wrapped around on Spark)
        Column("quantity", INTEGER, True, "Units, 1 to 1,000,000 (map credit notes' negative quantities with abs()).",
               min_value=1, max_value=1_000_000),
        Column("unit_price", DECIMAL, True, "Price per unit, 0 to 1,000,000,000.", min_value=0, max_value=1_000_000_000,
               type_override="DECIMAL(14,4)"),
        Column("category", STRING, False, "Product category; NULL when empty."),
        Column("description", STRING, False, "Product description; NULL when empty."),
        Column("status", ENUM, False, "One of " + ", ".join(ORDER_STATUSES) + "; empty means completed (a credit "
               "note is a return).", enum=ORDER_STATUSES, empty_default="'completed'"),
    ),
    updatable=True,
)

REVIEWS = TableSpec(
    name="reviews",
    id_column="review_id",
    description="Product or order reviews (optional), deduplicated by review_id. `text` may hold personal data: it "
    "never reaches BI in clear.",
    columns=(
        Column("review_id", ID, True, "Review id, unique."),
        Column("user_id", ID, True, "Reviewer."),
        Column("order_id", STRING, False, "Order reviewed; NULL when empty."),
        Column("review_ts", TIMESTAMP, True, "Review time, naive UTC."),
        Column("rating", INTEGER, False, "Stars 1-5; NULL when empty.", min_value=1, max_value=5),
        Column("text", STRING, False, "Review text; NULL when empty.", pii=True),
    ),
    updatable=True,
)

CUSTOMERS = TableSpec(
    name="customers",
    id_column="user_id",
    description="Customers from the landing zone (optional), deduplicated by user_id (first delivery wins, or the latest "
    "with keep: latest). Holds `email` in clear: the only table that may.",
    columns=(
        Column("user_id", ID, True, "User id, unique."),
        Column("signup_ts", TIMESTAMP, True, "Signup time, naive UTC."),
        Column("country", STRING, False, "ISO-3166 alpha-2 as delivered; NULL when empty."),
        Column("channel", STRING, False, "Acquisition channel; NULL when empty."),
        Column("email", STRING, False, "Personal data: never copied in clear out of raw.customers.", pii=True),
    ),
    updatable=True,
)

SEND_GROUPS = ("treatment", "control")

CAMPAIGN_SENDS = TableSpec(
    name="campaign_sends",
    id_column="send_id",
    description="Campaign sends (optional): who was sent which action, or held out as control, and with what "
    "probability the policy chose it. Outcomes are the orders after sent_ts (activation stage).",
    columns=(
        Column("send_id", ID, True, "Send id, unique."),
        Column("campaign_id", ID, True, "Campaign."),
        Column("user_id", ID, True, "Recipient (or held-out user)."),
        Column("action_id", ID, True, "Action sent; for control rows, the action the user would have received."),
        Column("sent_ts", TIMESTAMP, True, "Send time, naive UTC."),
        Column("send_group", ENUM, True, "treatment or control (the file's `group` column).", enum=SEND_GROUPS,
               file_names=("group",)),
        Column("propensity", DECIMAL, False, "Probability in (0, 1] with which the logging policy chose this action; "
               "NULL when unknown.", min_value=0.000001, max_value=1, type_override="DOUBLE"),
    ),
)

TABLES: dict[str, TableSpec] = {t.name: t for t in (ORDERS, ORDER_ITEMS, CLICKS, CUSTOMERS, REVIEWS, CAMPAIGN_SENDS)}


# Landing file formats, matched on the lower-cased file name.
FORMATS = ((".csv.gz", "csv.gz"), (".csv", "csv"), (".parquet", "parquet"))

# meta.ingest_ledger.status values.
STATUS_INGESTED = "ingested"  # read; its rows accepted, duplicate or rejected one by one
STATUS_DUPLICATE_FILE = "duplicate_file"  # same bytes as a file already ingested under another name
STATUS_REJECTED_FILE = "rejected_file"  # a required column is missing (or no header): every row rejected; read
# again when its source's mapping changes (source_key), and then replaced with its rejects
STATUS_FAILED = "failed"  # unreadable; nothing written; read again by every run that ingests
STATUSES = (STATUS_INGESTED, STATUS_DUPLICATE_FILE, STATUS_REJECTED_FILE, STATUS_FAILED)

LEDGER_TABLE = "meta.ingest_ledger"
REJECTS_TABLE = "raw.rejects"

LEDGER_COLUMNS = (
    ("file_id", "BIGINT", "Ledger id; raw.<table>._file_id and raw.rejects.file_id point here."),
    ("source", "VARCHAR", "The source that read the file (sources.yaml; a contract folder's own name otherwise)."),
    ("table_name", "VARCHAR", "Contract table fed: orders, order_items, clicks, customers or reviews."),
    ("file_name", "VARCHAR", "Path relative to the landing folder, e.g. orders/2026-03-01.csv."),
    ("file_format", "VARCHAR", "csv, csv.gz or parquet."),
    ("content_sha256", "VARCHAR", "sha256 of the file bytes: with the source, the ledger's key."),
    ("size_bytes", "BIGINT", "File size."),
    ("status", "VARCHAR", "ingested | duplicate_file | rejected_file | failed."),
    ("delivered", "BIGINT", "Data rows in the file = accepted + updated + duplicate + rejected + filtered."),
    ("accepted", "BIGINT", "Rows with a new id inserted into raw.<table>."),
    ("duplicate", "BIGINT", "Rows whose id was already in raw.<table> or earlier in the file (keep: latest: with the same "
     "values, or later in the file); of a duplicate_file, every row but those its source's where leaves out."),
    ("rejected", "BIGINT", "Rows written to raw.rejects."),
    ("filtered", "BIGINT", "Rows the source's `where` left out (counted, not rejected; the message says why)."),
    ("extra_columns", "VARCHAR[]", "Columns outside the contract (ignored)."),
    ("message", "VARCHAR", "Why a file was rejected or failed; notes (missing optional columns)."),
    ("run_id", "VARCHAR", "Dagster run that processed the file."),
    ("ingested_at", "TIMESTAMP", "When (naive UTC)."),
    ("source_key", "VARCHAR", "Fingerprint of the source's mapping that read the file: a rejected_file is read again "
     "when it changes (a mapping can supply the missing column)."),
    ("updated", "BIGINT", "Rows that replaced the stored row of their id (a source with keep: latest); counted in "
     "delivered = accepted + updated + duplicate + rejected + filtered."),
)

REJECTS_COLUMNS = (
    ("table_name", "VARCHAR", "Contract table the row was meant for."),
    ("file_id", "BIGINT", "The file's ledger row."),
    ("file_name", "VARCHAR", "Path relative to the landing folder."),
    ("row_number", "BIGINT", "1-based data row (header excluded) of the file."),
    ("rule", "VARCHAR", "Machine-readable rule, e.g. missing:order_id, unknown:status, future:order_ts."),
    ("reason", "VARCHAR", "Readable reason, e.g. `unparseable order_ts: 'not-a-date'`."),
    ("raw_values", "VARCHAR", "JSON of the row as read; e-mail values replaced by their sha256."),
    ("run_id", "VARCHAR", "Dagster run."),
    ("rejected_at", "TIMESTAMP", "When (naive UTC)."),
)


def _ddl(table: str, columns: tuple[tuple[str, str, str], ...], nullable: tuple[str, ...], key: str | None = None) -> str:
    """``CREATE TABLE`` from the documented columns (one definition of the table's shape)."""
    body = ",\n  ".join(f"{name} {sql_type}" + (" PRIMARY KEY" if name == key else "")
                         + ("" if name in nullable or name == key else " NOT NULL") for name, sql_type, _ in columns)
    return f"CREATE TABLE IF NOT EXISTS {table} (\n  {body}\n)"


# message and source_key are empty for most files; source_key also for rows from before the column (MIGRATIONS)
LEDGER_DDL = _ddl(LEDGER_TABLE, LEDGER_COLUMNS, nullable=("message", "source_key"), key="file_id")
REJECTS_DDL = _ddl(REJECTS_TABLE, REJECTS_COLUMNS, nullable=("raw_values",))


# keep: latest: a replaced row's old owner and order (ID columns whose value the replacement changed), so that the
# incremental builds keyed by them recompute that owner too (incremental.plan_build); the row itself is gone.
REPLACED_KEYS_TABLE = "meta.replaced_keys"
REPLACED_KEYS_DDL = (f"CREATE TABLE IF NOT EXISTS {REPLACED_KEYS_TABLE} (table_name VARCHAR NOT NULL, "
                     "file_id BIGINT NOT NULL, key_column VARCHAR NOT NULL, value VARCHAR NOT NULL)")


# Orders whose order row was delivered but not taken in: the order grain said "not an order" (a source's where left the
# row out: a pending order) or could not be read (a reject), so staging.line_orders does not make the order's lines an
# order of their own (a tester's pending orders came back as completed revenue). Ids taken in by the time the file is
# written (on Spark: its run) are not kept (another row of the same file, the first line of a Shopify order); one taken in later stays
# (staging.line_orders reads raw.orders first either way).
WITHHELD_FROM = "orders"  # the table whose rows left out or rejected are recorded (their ids, not their values)
WITHHELD_TABLE = "raw.withheld_orders"
WITHHELD_COLUMNS = (
    ("order_id", "VARCHAR", "An order id delivered as an order row that was left out by its source's where or rejected, "
     "not in raw.orders when its file was read: its order lines are not an order (staging.line_orders)."),
    ("rule", "VARCHAR", "Why: left_out:where, the reject's rule (raw.rejects has the row), or file_refused: the order's "
     "lines came from a file the orders source refused (rejected whole or failed; _file_id is that refusal, _row the "
     "first line's)."),
    ("_file_id", "BIGINT", "meta.ingest_ledger.file_id of the file the row came from."),
    ("_row", "BIGINT", "1-based data row of that file."),
)
WITHHELD_DDL = _ddl(WITHHELD_TABLE, WITHHELD_COLUMNS, nullable=())


def exact_money_sql(column: str) -> str:
    """SQL: a money ``column`` (DECIMAL(12,2) in the raw tables) as the type every sum of money is taken in: DECIMAL,
    so a sum is exact and the same in any row order (in DOUBLE, threads adding in another order moved the last digit
    of a user's revenue between runs), 38 digits so no sum of 12-digit amounts overflows. The features' SQL calls it
    as the Jinja macro ``{{ exact_money('amount') }}``; churn labels and campaign outcomes call it here."""
    return f"{column}::DECIMAL(38, 2)"


def without_order_row_sql(column: str) -> str:
    """SQL: the order id ``column`` was not delivered as an order row, taken in or withheld: its order lines make an
    order of their own (staging.line_orders, as the Jinja macro ``{{ without_order_row('order_id') }}``); an order
    left out by a where or rejected makes none (a tester's pending orders were completed revenue)."""
    return (f"{column} NOT IN (SELECT order_id FROM raw.{WITHHELD_FROM}) "
            f"AND {column} NOT IN (SELECT order_id FROM {WITHHELD_TABLE})")


def all_ddl() -> list[str]:
    return [t.ddl() for t in TABLES.values()] + [REJECTS_DDL, LEDGER_DDL, REPLACED_KEYS_DDL, WITHHELD_DDL]


# Warehouses created before a column existed: (table, column, statements that add and fill it).
MIGRATIONS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    (LEDGER_TABLE, "source", (f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN source VARCHAR",
                              f"UPDATE {LEDGER_TABLE} SET source = table_name")),
    (LEDGER_TABLE, "filtered", (f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN filtered BIGINT DEFAULT 0",)),
    (LEDGER_TABLE, "source_key", (f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN source_key VARCHAR",)),
    (LEDGER_TABLE, "updated", (f"ALTER TABLE {LEDGER_TABLE} ADD COLUMN updated BIGINT DEFAULT 0",)),
    ("raw.clicks", "funnel_stage", (
        "ALTER TABLE raw.clicks ADD COLUMN funnel_stage VARCHAR",
        "UPDATE raw.clicks SET funnel_stage = CASE WHEN event_type IN ('view', 'search', 'add_to_cart', 'checkout', "
        "'purchase') THEN event_type ELSE 'other' END")),
    ("raw.clicks", ANONYMOUS_ID, (f"ALTER TABLE raw.clicks ADD COLUMN {ANONYMOUS_ID} VARCHAR",)),
)
