"""Causal LMs answer: generate text (JSON or server-sent events) and score completions."""
