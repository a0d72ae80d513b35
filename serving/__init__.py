"""The model server: FastAPI routes over the model repository, Feast lookups and the prediction
log (docs/serving.md)."""
