"""The Spark engine: the same assets on Apache Spark (issue 16). pyspark is imported inside functions only,
so the code location loads without starting a JVM."""
