"""The reference trainer: rollout → verify → old log-probs + embeddings → hard negatives → RGR →
advantages → update → log → checkpoint."""
