"""CARE suite: train, evaluate and analyse vision-language models with Contrastive Anchored-REflection."""

__version__ = "0.1.0"
