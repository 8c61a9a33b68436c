"""`pgolf fit-budget`: the export choices that give the best round-trip val_bpb within a byte budget.

The search, in order (every size below is exact: the real coded bytes of every stream):
1. Sensitivity. One pass over `fisher_tokens` validation tokens gives each
   weight's diagonal empirical Fisher F (squared per-sequence gradients). A
   candidate's proxy loss is sum(F * (w - dequantized w)^2) over all quantized
   weights: the second-order estimate of what its round trip costs.
2. Sizes. Each quantized tensor is quantized once per (bits, clip, clip_k) in
   the space (cached) and its streams coded with the search codec; kept-float
   tensors are coded once. The container frame/header is measured from one
   cheap real export (clip=max) plus a slack; it barely moves between candidates.
   With export.gptq the levels of every linear layer are GPTQ's on that grid
   (Hessians measured once, before the search), as the export makes them.
3. Bits per group. Sizes and proxies add up over tensor groups, so every
   combination of group bits (embedding from `embed_bits`, the other groups
   from `bits`) is scored at once with numpy; the combinations that are best
   in proxy for their size form the proxy frontier.
4. Filling. The best combination that fits leaves bytes unused, so the next
   frontier points above the budget are brought under it with `selective`
   pruning (smallest-error quantized levels zeroed, export.prune_kind=selective),
   the fraction found by bisection on the exact coded size. Sizes are not
   assumed monotone in the fraction: bisection keeps the invariant "hi fits,
   measured", so whatever fraction it returns was measured to fit.
   Only `selective` pruning is searched: it acts on the cached quantized levels
   (its ordering is computed once per tensor), whereas float-side kinds would
   re-quantize every tensor at every step (seconds per step with clip=mse).
5. Raising single tensors (the upward fill). A group-level step is too
   coarse to spend the last bytes (one bit on a whole group is ~1/8 of its
   bytes), and pruned fills often measure worse than the unpruned mix below
   them, which left up to 1-2% of the budget unused. So every candidate also
   gets a copy with single tensors raised one bit-width (the next width of
   fit.bits / fit.embed_bits), chosen greedily by proxy gain per byte from
   the exact per-tensor sizes (at the candidate's pruning fraction), until no
   raise fits. The leftover is then below one tensor's one-bit step. Written
   as export.tensor_bits; labelled like `[i3=7 k0=7]` (group letter + block).
6. Evaluations. BPB is measured (on the first `val_tokens` validation tokens)
   only for fitting candidates: the `evals` best by proxy plus two uniform
   anchors (the highest uniform bit-width that fits, and the next one up
   pruned to fit), so the result is never worse on that slice than the plain
   "same bits everywhere" choice. The best measured candidate is chosen. When
   it has a raised copy not yet measured, that copy is measured too and kept
   if its BPB is not worse (so bytes are spent only when they do not hurt).
7. Final. The choice is exported by the normal path (export_state_dict ->
   write_artifact), read back from disk, its file size plus code bytes checked
   against max_bytes - margin (with a corrected header estimate and a re-fill
   when the estimate was short), and scored on the full validation set
   (capped by data.val_tokens); that is the reported score.

The search space is the `fit` config group (pgolf/config.py FitConfig,
conf/fit/default.yaml): `pgolf fit-budget runs/x --max-bytes 420KB fit.bits=[5,6,7]`.
Codec and clip are outer axes: the search runs once per (codec, clip, clip_k)
and pools the candidates. codec=auto in the base config searches with `ctx`
(the context coder: exact sizes, never larger than `rans`, and usually the
smallest);
any other codec is searched as given. Byte-shuffle is not modelled: export
only keeps a shuffled stream when it is smaller, so predicted sizes are upper
bounds. export.prune and export.prune_kind in the base config are ignored: pruning
is a search variable; so are export.tensor_bits entries other than 16 (a 16
keeps that tensor float, as in export). Nothing is written when the budget is
infeasible. Besides the artifact, the CSV and the JSON summary, the chosen
configuration is saved in full as YAML (fit/fit-<bytes>.yaml): exporting the
source with its `export` section writes the same bytes.
"""
