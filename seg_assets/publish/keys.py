"""Asset keys and tables of the publish stage (a module of its own, as churn/keys.py: segmentation, activation and
automation read them without importing the publish assets)."""

import dagster as dg

HISTORY_TABLE = "analytics.segment_history"  # its open spells are where scoring's sticky rule starts (membership.py)
SEGMENT_HISTORY = dg.AssetKey(HISTORY_TABLE.split("."))
SEGMENT_TRANSITIONS = dg.AssetKey(["analytics", "segment_transitions"])
BI_SEGMENTS = dg.AssetKey(["bi", "segments"])  # the BI publication (publish/assets.py): bi/audiences follow it
TRANSITIONS_TABLE = ".".join(SEGMENT_TRANSITIONS.path)
