"""The shape of the tiny random Qwen2.5-VL-architecture model, declared once.

:class:`TinyVLMConfig` is the ``model.tiny`` section of a run's YAML and the argument of
:func:`care.models.vlm.build_tiny_vlm`, so a setting has one name, one default and one check.
It lives apart from ``care.models.vlm`` so that reading a config does not import transformers.

Example::

    TinyVLMConfig(hidden_size=32, num_layers=1, num_heads=2, num_kv_heads=1,
                  intermediate_size=64, vision_hidden_size=16)
    TinyVLMConfig(hidden_size=60, num_heads=8)   # ValueError: 60 is not divisible by 8
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class TinyVLMConfig(BaseModel):
    """Text decoder and vision tower sizes of the tiny model (all ints >= 1 unless noted).

    The defaults give ~0.17 M parameters with the tiny BPE tokenizer. Beyond the bounds on each
    field, the heads must split the widths: ``hidden_size / num_heads`` (the head dim) is a
    multiple of 8 so multimodal RoPE gets a frequency per axis, ``num_heads`` is a multiple of
    ``num_kv_heads`` (grouped-query attention), and ``vision_hidden_size / vision_num_heads`` is
    a multiple of 4 (the vision tower's 2-D rotary embedding).
    """

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True, allow_inf_nan=False)

    hidden_size: int = Field(64, ge=8, description="Text hidden size of the tiny random model.")
    num_layers: int = Field(2, ge=1, description="Decoder layers of the tiny model.")
    num_heads: int = Field(4, ge=1, description="Attention heads.")
    num_kv_heads: int = Field(2, ge=1, description="Key/value heads (GQA).")
    intermediate_size: int = Field(128, ge=8, description="MLP width.")
    vision_depth: int = Field(1, ge=1, description="Vision transformer blocks.")
    vision_hidden_size: int = Field(32, ge=8, description="Vision hidden size.")
    vision_num_heads: int = Field(2, ge=1, description="Vision attention heads.")
    initializer_range: float = Field(
        0.02,
        gt=0.0,
        description="Std of the normal weight init (0.02, Qwen's, gives a near-uniform "
        "next-token distribution; ~0.2 a peaked one).",
    )

    @model_validator(mode="after")
    def _heads_split_the_widths(self) -> TinyVLMConfig:
        if self.hidden_size % self.num_heads:
            raise ValueError(
                f"hidden_size ({self.hidden_size}) must be divisible by num_heads "
                f"({self.num_heads})"
            )
        if self.num_heads % self.num_kv_heads:
            raise ValueError(
                f"num_heads ({self.num_heads}) must be a multiple of num_kv_heads "
                f"({self.num_kv_heads}) for grouped-query attention"
            )
        if self.head_dim % 8:
            raise ValueError(
                f"head_dim = hidden_size / num_heads = {self.head_dim} must be a multiple of 8 "
                "so that multimodal RoPE gets at least one frequency per axis"
            )
        vision = self.vision_hidden_size
        if vision % self.vision_num_heads or (vision // self.vision_num_heads) % 4:
            raise ValueError(
                f"vision_hidden_size ({vision}) / vision_num_heads ({self.vision_num_heads}) "
                "must be an integer multiple of 4 (2-D rotary embedding of the vision tower)"
            )
        return self

    @property
    def head_dim(self) -> int:
        """Width of one text attention head."""
        return self.hidden_size // self.num_heads


# The smallest shape in use (one decoder layer): the smoke run's --small model and the tests'
# tiny trainings, where seconds matter more than what the model can learn.
SMALLEST_SHAPE: dict[str, int] = {
    "hidden_size": 32,
    "num_layers": 1,
    "num_heads": 2,
    "num_kv_heads": 1,
    "intermediate_size": 64,
    "vision_hidden_size": 16,
}
