"""The model for a config's kwargs: the baseline GPT, or a RecordsGPT when any record-era knob is on.

Apart from gpt.py so that gpt.py and records.py (which subclasses its blocks) do not import each other.
"""

from __future__ import annotations

from pgolf.model.gpt import GPT
from pgolf.model.knobs import RECORD_KNOBS, uses_records


def make_gpt(**config) -> GPT:
    """The GPT for `config` (GPT.config's keys): the baseline GPT, or a RecordsGPT when any record-era knob is on
    (model/records.py, imported only then, so a packed script carries it only when its model uses it)."""
    knobs = {key: config.pop(key) for key in list(config) if key in RECORD_KNOBS}
    if not uses_records(knobs):
        return GPT(**config)
    from pgolf.model.records import RecordsGPT

    return RecordsGPT(**config, **{**RECORD_KNOBS, **knobs})
