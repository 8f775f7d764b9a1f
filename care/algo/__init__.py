"""Pure, vectorised algorithm math: advantages, hard negatives, token weights, losses."""
