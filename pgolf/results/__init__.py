"""Results: every table, CSV, JSON and plot (`tables`), and the cell table of any set of runs (`report`)."""
