"""The GPT (reference-compatible state-dict keys, model/gpt.py), the record-era knobs (model/knobs.py: torch-free, so
config validation can import them) and the record-era model (model/records.py)."""
