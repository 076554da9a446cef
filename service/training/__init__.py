"""Training and retraining S3T sequences: scheduling the jobs, what a job reads from the lineage
and records back, and the job runner."""
