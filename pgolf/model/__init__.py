"""The GPT (reference-compatible state-dict keys) and helpers to count and load its weights."""

from pgolf.model.gpt import GPT, count_params, load_reference_state_dict, strip_wrapper_prefixes

__all__ = ["GPT", "count_params", "load_reference_state_dict", "strip_wrapper_prefixes"]
