"""The order in which test-time training scores the validation tokens: documents, their batches, their chunks.

A document runs from its BOS to the next document's BOS, which is its last target: the targets of all documents
are then every validation target once (tokens before the first BOS form a document of their own). Documents are
adapted `batch_docs` at a time, grouped by length so a batch wastes little padding, longest batch first (the
record's order); within a batch, chunk 0 of every document is scored, then chunk 1, and so on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from pgolf.model.knobs import BOS_ID


@dataclass(frozen=True)
class Document:
    start: int
    """Index of its first token (a BOS, or 0) in the validation tokens."""
    length: int
    """Its tokens, the next document's BOS included; it has length - 1 targets."""

    @property
    def targets(self) -> int:
        return self.length - 1


@dataclass(frozen=True)
class Window:
    """What one step feeds the model for one document, relative to the document's first token."""

    start: int
    """First input token; the inputs are tokens start..end-1 and the targets start+1..end."""
    end: int
    first_scored: int
    """Window position of the first target this step scores; the rest of the window is context."""

    @property
    def length(self) -> int:
        return self.end - self.start


def documents(tokens: torch.Tensor, bos_id: int = BOS_ID) -> list[Document]:
    """The documents of the validation tokens (1-D), in validation order."""
    n = tokens.numel()
    starts = (tokens == bos_id).nonzero().flatten().tolist()
    if not starts or starts[0] != 0:
        starts = [0, *starts]
    ends = [s + 1 for s in starts[1:]] + [n]
    return [Document(s, e - s) for s, e in zip(starts, ends) if e - s >= 2]


def batches(docs: list[Document], batch_docs: int) -> list[list[Document]]:
    """Documents by length in batches of `batch_docs`, the batch of the longest first."""
    by_length = sorted(docs, key=lambda d: d.length)
    groups = [by_length[i:i + batch_docs] for i in range(0, len(by_length), batch_docs)]
    return sorted(groups, key=lambda g: -g[-1].length)


def num_chunks(doc: Document, chunk: int) -> int:
    return -(-doc.targets // chunk)


def window(doc: Document, index: int, chunk: int, context: int) -> Window:
    """Chunk `index` of `doc`: targets index*chunk .. (index+1)*chunk - 1 (fewer at the end), with up to `context`
    tokens of input ending at the chunk's last target, none before the document's start."""
    first = index * chunk
    end = min(first + chunk, doc.targets)
    start = max(0, end - context)
    return Window(start, end, first - start)


def phase_ends(prefix_docs: int, phases: int) -> list[int]:
    """After how many scored documents each global phase runs: evenly over the first `prefix_docs`."""
    return [prefix_docs * (p + 1) // phases for p in range(phases)] if phases and prefix_docs else []
