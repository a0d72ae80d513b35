"""Features: engineer entity features, write the offline source, apply, materialize."""
