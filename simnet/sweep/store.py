"""The sweep's result store: one SQLite row per run, committed as each run ends.

A row is keyed by ``Point.key`` (canonical parameters, seed, simnet version), so a sweep
restarted after ``kill -9`` skips what is already stored and never stores a run twice.
"""

from __future__ import annotations

import csv
import json
import sqlite3
from pathlib import Path

from simnet.sweep.design import Point

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    key TEXT PRIMARY KEY,
    idx INTEGER NOT NULL,
    params TEXT NOT NULL,
    replication INTEGER NOT NULL,
    seed INTEGER NOT NULL,
    version TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('done', 'failed')),
    error TEXT,
    results TEXT
)
"""


class Store:
    """A sweep's SQLite file; a context manager."""

    def __init__(self, path: str | Path, version: str):
        self.path, self.version = Path(path), version
        self.db = sqlite3.connect(self.path)
        self.db.execute("PRAGMA journal_mode=WAL")
        self.db.execute(SCHEMA)
        self.db.commit()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc) -> None:
        self.db.close()

    def finished(self) -> set[str]:
        return {k for (k,) in self.db.execute("SELECT key FROM runs")}

    def record(self, point: Point, results: dict | None, error: str | None = None) -> None:
        """Store one run's results, or its error; committed at once."""
        self.db.execute(
            "INSERT OR IGNORE INTO runs VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (point.key(self.version), point.index, json.dumps(point.params, sort_keys=True),
             point.replication, point.seed, self.version, "failed" if error else "done", error,
             None if results is None else json.dumps(results, sort_keys=True)))
        self.db.commit()

    def rows(self) -> list[dict]:
        """Every stored run in point order: parameters, then results (or the error)."""
        out = []
        for idx, params, rep, seed, status, error, results in self.db.execute(
                "SELECT idx, params, replication, seed, status, error, results FROM runs "
                "ORDER BY idx"):
            out.append({"point": idx, **json.loads(params), "replication": rep, "seed": seed,
                        "status": status, "error": error or "", **json.loads(results or "{}")})
        return out

    def export_csv(self, path: str | Path) -> Path:
        rows = self.rows()
        columns = list(dict.fromkeys(k for r in rows for k in r))
        with open(path, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, columns)
            w.writeheader()
            w.writerows(rows)
        return Path(path)

    def export_parquet(self, path: str | Path) -> Path | None:
        """The same table as Parquet, when pyarrow is installed (None otherwise)."""
        try:
            import pyarrow as pa
            import pyarrow.parquet as pq
        except ImportError:
            return None
        rows = self.rows()
        columns = list(dict.fromkeys(k for r in rows for k in r))
        pq.write_table(pa.Table.from_pylist([{c: r.get(c) for c in columns} for r in rows]), path)
        return Path(path)
