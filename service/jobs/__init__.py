"""Jobs: the skeleton every job runner shares (runner), what finished jobs settle for the
deletions waiting on them (settlement), and progress of training and retraining work as the API
reports it."""
