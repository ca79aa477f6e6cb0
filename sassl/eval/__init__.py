"""Evaluators on frozen (or fine-tuned) backbones."""
