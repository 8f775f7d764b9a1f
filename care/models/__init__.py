"""Model-side building blocks: tokenizers (and, later, the policy models) used by CARE."""
