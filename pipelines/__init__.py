"""Pipelines composed from the components, their compilation, local runs and submission."""
