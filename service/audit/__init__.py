"""Reading the hash-chained audit log at a cost that does not grow with its history."""
