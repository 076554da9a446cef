"""Jobs: the skeleton every job runner shares (runner), and progress of training and retraining
work as the API reports it."""
