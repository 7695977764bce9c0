"""Experiment suite that compares Keras backends (Theano, TensorFlow) training one small CNN."""
