"""Pipelines: plain specs, DAG validation, prompt templates, the catalog and pipeline files."""
