"""`pgolf audit DIR`: check a records folder (pgolf-made or not) against the challenge's rules, offline.

One module per check: folder (what the folder holds), code (static analysis of the script: which files it
runs as code, what it imports and reads from the environment), logs (what each train log prints),
bytes_check, significance, timing, lut (+ probe, the subprocess that loads the foreign script), hygiene,
replay (pgolf folders: score the artifact again), and audit (the entry: every check, one row each).
"""
