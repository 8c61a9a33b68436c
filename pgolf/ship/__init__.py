"""What ships: `pack` (records folders), `standalone` (the shipped script's main), `bootstrap` (its first lines)."""
