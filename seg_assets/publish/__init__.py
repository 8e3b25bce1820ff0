"""Publish stage: segment history and transitions, and the BI copy of the analytics tables. assets.py is what the code
location registers; the stage's keys (keys.py) are read by other stages without importing it."""
