"""Training and retraining S3T sequences: the bridge between the lineage database and the engine."""
