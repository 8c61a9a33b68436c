"""The `train_gpt.py` that `pgolf pack` ships, as bytes, and the code bytes every total counts.

The script carries pgolf's own modules, not a second copy kept by hand: the
import graph is walked (ast, nothing is imported) from `standalone.py`, the
shipped main. Imports listed in GATED are followed only when the packed
config uses them (GPTQ, export pruning, gradual pruning, weight averaging,
loss penalties, the ctx, zstd and brotli codecs), so features a config does not use cost it no
bytes; such a module must be imported where it is used, never at import
time (`bundle_modules` refuses a bundle that would break).

Two forms (`--wrap`):
- `none`: readable. The packed config, the modules verbatim as string
  literals, and `bootstrap.py`, which unpacks them to files and runs them.
- `lzma` (the default, as the top records ship): the same script minified
  (docstrings, comments, annotations and unused code out, names shortened:
  python-minifier per module, pgolf across modules) with the modules under
  one- or two-letter keys in one flat package, lzma-compressed and
  base85-encoded inside a one-line `exec`.

The packed config holds only what differs from the schema defaults (the
bundled schema fills the rest), and no run/budget/fit/launcher/device
settings: the script picks CUDA when present. `code_bytes.count_code_bytes` measures the
wrapped script for a config, cached by a hash of the sources and the config
(in-process and in ~/.cache/pgolf), so an edited checkout never serves a stale
size; the minified modules are cached there too, by a hash of their text, so
a config that shares another's module set is measured without minifying.


Modules: `graph` (which pgolf modules and packages a config's script carries), `minify` (stripping and
renaming), `flat` (the compact script's short module keys), `script` (the two wraps), `code_bytes` (the measured
size every total counts), `cache` (the on-disk cache between processes).
"""
