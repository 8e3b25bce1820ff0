"""seg-assets: dynamic customer segmentation as Dagster software-defined assets."""
