"""seg-assets: dynamic customer segmentation as Dagster software-defined assets."""

import warnings

# pyspark 4 warns on import that it "does not yet fully support pandas >= 3.0.0". Great Expectations imports pyspark
# whenever it is installed, so a refresh printed the warning twice to the user's terminal even with the DuckDB engine.
# The Spark engine's use of pandas is tested on this stack (test_spark_*.py).
warnings.filterwarnings("ignore", message="PySpark does not yet fully support pandas", category=FutureWarning)
