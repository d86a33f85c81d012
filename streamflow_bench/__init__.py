"""Benchmarks that print numbers (`streamflow bench ...`); timing goals live here, never in tests.

A package of its own beside the runtime package: it drives the whole pipeline (the asset graph,
the API, Feast's default paths) and nothing in streamflow_assets imports it.
"""
