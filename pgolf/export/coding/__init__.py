"""Byte coding of quantized streams: general codecs and pgolf's own entropy coders (rans, ctx)."""
