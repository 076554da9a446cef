"""Approximate unlearning passes in the service: policy, planning, the job and its records."""
