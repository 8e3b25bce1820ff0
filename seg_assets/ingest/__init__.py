"""Ingestion stage: landing files -> the contract's raw tables (contract.TABLES), raw.rejects, meta.ingest_ledger.

``assets`` and ``asset_checks`` are what the code location registers; the loader functions
(:func:`seg_assets.ingest.loader.ingest_landing`) work on any DuckDB connection.
"""

from seg_assets.ingest.assets import ingest_landing
from seg_assets.ingest.checks import RawCheckConfig, asset_checks

assets = [ingest_landing]

__all__ = ["assets", "asset_checks", "ingest_landing", "RawCheckConfig"]
