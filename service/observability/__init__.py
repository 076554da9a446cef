"""What operators see of a running process: Prometheus metrics and structured JSON logs."""
