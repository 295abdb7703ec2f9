"""Causal, streaming ECG and pleth analysis: filters, QRS, beat classes, rhythm, quality."""
