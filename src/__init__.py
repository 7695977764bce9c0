"""Experiment suite comparing Keras backends on the paper CNN; see README.md."""
