"""Measured quality: what a model serves, scored on its evaluation split after every change, and
each approximate pass graded against the exact retrain that superseded it."""
