"""`pgolf fit-budget`: the export choices that give the best round-trip val_bpb within a byte budget.

The search, in order (every size below is exact: the real coded bytes of every stream):
1. Sensitivity. One pass over `fisher_tokens` validation tokens gives each
   weight's diagonal empirical Fisher F (squared per-sequence gradients). A
   candidate's proxy loss is sum(F * (w - dequantized w)^2) over all quantized
   weights: the second-order estimate of what its round trip costs.
2. Sizes. Each quantized tensor is quantized once per (bits, clip, sdclip k,
   GPTQ or rounding) in the space (cached; GPTQ runs all of a tensor's grids in
   one pass, bit for bit what one grid at a time gives) and its streams coded
   with each searched codec; kept-float tensors are coded once, the control
   tensors once per width (float32, float16). The container frame/header is
   measured from one cheap real export (clip=max) plus a slack per codec.
   With GPTQ in the space the layer Hessians are measured once, and every
   linear layer's proxy becomes the error of its outputs (sum_i s_i d_i H d_i^T,
   s_i the row's Fisher over tr H): GPTQ trades weight error for output error,
   so only that form ranks its levels and rounding's alike.
3. Bits per group. Sizes and proxies add up over tensor groups, so the group
   options (bits, and with sdclip each group's k apart: embedding bits from
   `embed_bits`, the others from `bits`) and the control tensors' width are
   combined as a Pareto frontier of summed bytes and proxy, merged one group
   at a time (a dominated partial sum never leads to a frontier point).
4. Filling. The best combination that fits leaves bytes unused, so the
   uniform anchors above the budget (and, with fit.fill_candidates N, the
   next N frontier points above it: 0 by default, 1 when no point fits
   unpruned) are brought under it with `selective`
   pruning (smallest-error quantized levels zeroed, export.prune_kind=selective),
   the fraction found by bisection on the exact coded size. Sizes are not
   assumed monotone in the fraction: bisection keeps the invariant "hi fits,
   measured", so whatever fraction it returns was measured to fit. Only
   rounding's levels are pruned: GPTQ chose each level to absorb the error
   of the columns before it, which zeroing levels afterwards undoes (and
   every pruned fill is a bisection of exactly coded sizes).
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
   only for fitting candidates: the `evals` best by proxy, and in each level
   choice (rounding, GPTQ) its best by proxy and its best uniform anchors (the
   highest uniform bit-width that fits, and the next one up pruned to fit), so
   the result is never worse on that slice than the plain "same bits
   everywhere" choice. The best measured candidate is chosen. When
   it has a raised copy not yet measured, that copy is measured too and kept
   if its BPB is not worse (so bytes are spent only when they do not hurt).
7. Final. The choice is exported by the normal path (export_state_dict ->
   write_artifact), read back from disk, its file size plus code bytes checked
   against max_bytes - margin (with a corrected header estimate and a re-fill
   when the estimate was short), and scored on the full validation set
   (capped by data.val_tokens); that is the reported score.

The search space is the `fit` config group (pgolf/config.py FitConfig,
conf/fit/default.yaml): `pgolf fit-budget runs/x --max-bytes 420KB fit.bits=[5,6,7]`.
Codec, clip kind and level choice (fit.gptq) are outer axes: the search runs
once per (codec, clip, gptq) and pools the candidates. Each setting has its own
code reserve, the script its codec and GPTQ would ship, so its stream limit is
the budget less its own code: codec=auto in the base config searches `ctx`
(the context coder: the smallest streams, and a larger decoder) and `rans`
(no context coder in the script), so ctx wins only where its streams pay for
its code. Any other codec is searched as given. Byte-shuffle is not modelled: export
only keeps a shuffled stream when it is smaller, so predicted sizes are upper
bounds. export.prune and export.prune_kind in the base config are ignored: pruning
is a search variable; so are export.tensor_bits entries other than 16 (a 16
keeps that tensor float, as in export). Nothing is written when the budget is
infeasible. Besides the artifact, the CSV and the JSON summary, the chosen
configuration is saved in full as YAML (fit/fit-<bytes>.yaml): exporting the
source with its `export` section writes the same bytes.
"""
