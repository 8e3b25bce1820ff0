"""The Spark engine: the session resource and the steps that run on Spark (see docs/spark.md)."""
