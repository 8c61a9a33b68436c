"""pgolf: experiment runner for Parameter Golf (train, quantize, prune, compress, score in val_bpb)."""

__version__ = "0.1.0"
