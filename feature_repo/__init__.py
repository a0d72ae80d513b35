"""Feast feature repository of the bundled example, and its feature engineering.

``building_energy.py`` holds the Feast objects (Entity -> Source -> FeatureView ->
FeatureService); ``engineering.py`` is the one module that turns raw rows into features, used by
the pipeline's features step and therefore by everything that reads Feast (training and serving).
"""
