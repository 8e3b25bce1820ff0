"""A BI client in its own process: holds bi/segments.duckdb open read-only and queries it in a loop.

Every ``reopen_every`` queries it closes and reopens the file (as a dashboard refresh would), so it sees
new publications. Each observation is one JSON line: the as-of, whether the snapshot was consistent
(the profiles' user counts add up to the user_segments rows), or the error. Stops when ``stop`` exists.

    python bi_reader.py BI_FILE OUT_JSONL STOP_FILE
"""

import json
import sys
import time
from pathlib import Path

import duckdb

QUERY = """
SELECT (SELECT max(as_of) FROM analytics.user_segments)::VARCHAR,
       (SELECT count(*) FROM analytics.user_segments),
       (SELECT count(DISTINCT user_id) FROM analytics.user_segments),
       (SELECT sum(users) FROM analytics.segment_profiles)
"""


def main(bi_file: str, out: str, stop: str, reopen_every: int = 5) -> None:
    con, n = None, 0
    with open(out, "a") as sink:
        while not Path(stop).exists():
            try:
                if con is None:
                    con = duckdb.connect(bi_file, read_only=True)
                as_of, rows, users, profiled = con.sql(QUERY).fetchall()[0]
                sink.write(json.dumps({"t": time.time(), "as_of": as_of, "rows": rows,
                                       "consistent": rows == users == int(profiled or -1)}) + "\n")
            except Exception as exc:  # an error is an observation, not a crash
                sink.write(json.dumps({"t": time.time(), "error": f"{type(exc).__name__}: {exc}"}) + "\n")
            sink.flush()
            n += 1
            if n % reopen_every == 0 and con is not None:
                con.close()
                con = None
            time.sleep(0.2)


if __name__ == "__main__":
    main(*sys.argv[1:4])
