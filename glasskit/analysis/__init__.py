"""Analysis on top of the pipeline: plotly figure builders and summary tables."""
