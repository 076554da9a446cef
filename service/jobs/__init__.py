"""Jobs: progress of training and retraining work."""
