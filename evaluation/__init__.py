"""lmms-eval bridge and evaluation result tables."""
