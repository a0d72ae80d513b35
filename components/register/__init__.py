"""Register: a new registry version named V<tag>.<manual>.<auto>, alias challenger."""
