"""Vision-language policies: the offline tiny Qwen2.5-VL, loading/saving checkpoint folders.

Three facts about the machines this project runs on shape the module:

* torchvision must not be installed, so the image processor is ``Qwen2VLImageProcessorPil`` and
  the processor has no video part (``Qwen2_5_VLProcessor`` builds a torchvision video
  processor). :class:`Qwen2_5_VLImageProcessor` is that processor without video.
* No model hub is reachable: :func:`build_tiny_vlm` builds a random-weight model with the real
  Qwen2.5-VL architecture from a config written in code, deterministic by seed.
* A random policy happily samples the vision placeholder tokens, after which the next forward
  fails ("Image features and image tokens do not match"); :func:`vision_token_ids` lists the ids
  every sampler must suppress.

    >>> from care.models.tokenizer import train_tiny_bpe_tokenizer
    >>> model, processor = build_tiny_vlm(train_tiny_bpe_tokenizer(), seed=0)
    >>> save_policy(model, processor, "/tmp/tiny")          # plain transformers loads it too
    >>> model, processor = load_policy("/tmp/tiny", dtype="float32")
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import (
    AutoModelForImageTextToText,
    AutoProcessor,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    ProcessorMixin,
    Qwen2_5_VLConfig,
    Qwen2_5_VLForConditionalGeneration,
    Qwen2_5_VLProcessor,
)
from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

from care.models.tiny_config import TinyVLMConfig

# The processor class real Qwen2.5-VL folders declare. Our saved folders declare it too, so tools
# that have torchvision (vLLM, lmms-eval on a GPU box) treat them as ordinary Qwen2.5-VL folders.
STANDARD_PROCESSOR_CLASS = "Qwen2_5_VLProcessor"

# Tokens that only the processor may place: sampling one breaks the next multimodal forward.
VISION_TOKENS: tuple[str, ...] = (
    "<|vision_start|>",
    "<|vision_end|>",
    "<|vision_pad|>",
    "<|image_pad|>",
    "<|video_pad|>",
)
IMAGE_PLACEHOLDER_TOKENS: tuple[str, ...] = ("<|image_pad|>", "<|video_pad|>")
STOP_TOKENS: tuple[str, ...] = ("<|im_end|>", "<|endoftext|>")

# Qwen's vision patch is 14 px and 2x2 patches merge into one LLM token, so one vision token
# covers 28x28 px: a 112x112 image gives an 8x8 patch grid and 16 vision tokens.
VISION_TOKEN_PIXELS = 28
TINY_MIN_PIXELS = 56 * 56
TINY_MAX_PIXELS = 112 * 112

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "bfloat16": torch.bfloat16,
    "float16": torch.float16,
}


class Qwen2_5_VLImageProcessor(Qwen2_5_VLProcessor):
    """``Qwen2_5_VLProcessor`` for images and text only (no video processor, no torchvision).

    Text handling is the parent's: each ``<|image_pad|>`` in the text becomes
    ``grid_t * grid_h * grid_w / merge_size**2`` copies, and ``mm_token_type_ids`` marks them.
    ``save_pretrained`` writes ``processor_config.json`` (the transformers 5 layout) plus a
    standalone ``preprocessor_config.json`` (what older loaders and vLLM read), and names the
    processor class ``Qwen2_5_VLProcessor`` in both the processor and tokenizer configs, so the
    folder looks exactly like a released Qwen2.5-VL folder. Reload with
    ``Qwen2_5_VLImageProcessor.from_pretrained(folder)`` or :func:`load_processor`; plain
    ``AutoProcessor`` needs torchvision for the video half of ``Qwen2_5_VLProcessor``.

    Example: ``processor(text=["<|vision_start|><|image_pad|><|vision_end|>Hi"],
    images=[112x112 image], return_tensors="pt")["image_grid_thw"]`` → ``[[1, 8, 8]]`` and 16
    ``<|image_pad|>`` ids in ``input_ids``.
    """

    def __init__(
        self,
        image_processor: Any = None,
        tokenizer: Any = None,
        chat_template: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(
            image_processor=image_processor,
            tokenizer=tokenizer,
            video_processor=None,
            chat_template=chat_template,
            **kwargs,
        )

    def to_dict(self) -> dict[str, Any]:
        output = super().to_dict()
        output["processor_class"] = STANDARD_PROCESSOR_CLASS
        return output

    def save_pretrained(self, save_directory: str | os.PathLike[str], **kwargs: Any) -> list[str]:
        files = super().save_pretrained(save_directory, **kwargs)
        files += self.image_processor.save_pretrained(save_directory)
        tokenizer_config = Path(save_directory) / "tokenizer_config.json"
        if tokenizer_config.is_file():
            # The parent stamps our subclass name into the tokenizer config; a released folder
            # names the standard class, and only that name is known to other tools.
            config = json.loads(tokenizer_config.read_text(encoding="utf-8"))
            config["processor_class"] = STANDARD_PROCESSOR_CLASS
            tokenizer_config.write_text(
                json.dumps(config, indent=2, ensure_ascii=False) + "\n", encoding="utf-8"
            )
        return files


def build_processor(
    tokenizer: PreTrainedTokenizerBase,
    *,
    image_size: int | None = None,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
    patch_size: int = 14,
    merge_size: int = 2,
    temporal_patch_size: int = 2,
) -> Qwen2_5_VLImageProcessor:
    """A Qwen2.5-VL image+text processor around `tokenizer`, with the PIL image processor.

    Images are resized (aspect ratio kept, sides multiples of ``patch_size * merge_size``) so
    their pixel count lies in ``[min_pixels, max_pixels]``. The defaults suit the tiny model:
    a 112x112 image stays 112x112 → an 8x8 patch grid → 16 vision tokens; larger images shrink
    to at most 16 tokens. Real Qwen2.5-VL uses ``min_pixels = 3136, max_pixels = 12845056``.

    Args:
        tokenizer: a tokenizer with the Qwen2.5 vision tokens (``<|image_pad|>`` ...).
        image_size: shorthand that sets ``min_pixels = max_pixels = image_size**2``; must be a
            multiple of ``patch_size * merge_size``.
        min_pixels, max_pixels: pixel budget per image (``min_pixels <= max_pixels``).
        patch_size, merge_size, temporal_patch_size: must match the vision tower's config.

    Example: ``build_processor(tok, image_size=56)`` → every image becomes 56x56 → 4 tokens.
    """
    vision_token_ids(tokenizer)  # fails early, naming what is missing
    for name, value in (
        ("min_pixels", min_pixels),
        ("max_pixels", max_pixels),
        ("patch_size", patch_size),
        ("merge_size", merge_size),
        ("temporal_patch_size", temporal_patch_size),
    ):
        _check_positive_int(name, value)
    if image_size is not None:
        _check_positive_int("image_size", image_size)
        unit = patch_size * merge_size
        if image_size % unit:
            raise ValueError(
                f"image_size must be a multiple of patch_size * merge_size = {unit} (one vision "
                f"token covers {unit}x{unit} px), got {image_size}"
            )
        min_pixels = max_pixels = image_size * image_size
    if min_pixels > max_pixels:
        raise ValueError(f"min_pixels ({min_pixels}) must not exceed max_pixels ({max_pixels})")
    image_processor = Qwen2VLImageProcessorPil(
        min_pixels=min_pixels,
        max_pixels=max_pixels,
        patch_size=patch_size,
        merge_size=merge_size,
        temporal_patch_size=temporal_patch_size,
    )
    return Qwen2_5_VLImageProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def vision_token_ids(tokenizer_or_processor: Any) -> list[int]:
    """Ids a sampler must never produce: the vision placeholders and structure tokens.

    ``<|vision_start|>``, ``<|vision_end|>``, ``<|vision_pad|>``, ``<|image_pad|>``,
    ``<|video_pad|>`` where the vocabulary has them, plus the processor's own ``image_token_id``
    / ``video_token_id``. Sorted, without duplicates.

    Example: with the real Qwen2.5 tokenizer → ``[151652, 151653, 151654, 151655, 151656]``.

    Raises:
        ValueError: the vocabulary has no image placeholder token (not a Qwen-VL tokenizer).
    """
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    if not isinstance(tokenizer, PreTrainedTokenizerBase):
        raise ValueError(
            "vision_token_ids needs a tokenizer or a processor with a .tokenizer, got "
            f"{type(tokenizer_or_processor).__name__}"
        )
    vocabulary = tokenizer.get_vocab()
    ids = {vocabulary[token] for token in VISION_TOKENS if token in vocabulary}
    for attribute in ("image_token_id", "video_token_id"):
        value = getattr(tokenizer_or_processor, attribute, None)
        if isinstance(value, int) and value >= 0:
            ids.add(value)
    if (
        "<|image_pad|>" not in vocabulary
        and getattr(tokenizer_or_processor, "image_token_id", None) is None
    ):
        raise ValueError(
            f"the tokenizer has no image placeholder token '<|image_pad|>' (vocabulary size "
            f"{len(tokenizer)}): it is not a Qwen-VL tokenizer"
        )
    return sorted(ids)


def stop_token_ids(tokenizer_or_processor: Any) -> list[int]:
    """Ids that end a response: ``<|im_end|>``, ``<|endoftext|>`` and the tokenizer's eos.

    Example: with the real Qwen2.5 tokenizer → ``[151643, 151645]``.
    """
    tokenizer = getattr(tokenizer_or_processor, "tokenizer", tokenizer_or_processor)
    vocabulary = tokenizer.get_vocab()
    ids = {vocabulary[token] for token in STOP_TOKENS if token in vocabulary}
    if tokenizer.eos_token_id is not None:
        ids.add(int(tokenizer.eos_token_id))
    if not ids:
        raise ValueError("the tokenizer has neither <|im_end|>, <|endoftext|> nor an eos token")
    return sorted(ids)


TINY_MAX_POSITIONS = 32768
"""Longest sequence the tiny model's rotary embedding is set up for."""


def tiny_vlm_config(
    tokenizer: PreTrainedTokenizerBase, shape: TinyVLMConfig | None = None
) -> Qwen2_5_VLConfig:
    """The Qwen2.5-VL config of the tiny model of ``shape`` (defaults if None) over `tokenizer`.

    ``shape`` was checked when it was built (:class:`TinyVLMConfig`). Multimodal RoPE splits
    the rotary half of each head (``head_dim / 2`` frequencies) into temporal, height and width
    sections in Qwen's 2:3:3 ratio (16/24/24 for head_dim 128); head_dim 16 gives
    ``mrope_section = [2, 3, 3]``.
    """
    shape = shape or TinyVLMConfig()
    vocabulary = tokenizer.get_vocab()
    vision_token_ids(tokenizer)
    head_dim = shape.head_dim
    rotary_half = head_dim // 2
    temporal = rotary_half // 4
    height = (rotary_half - temporal) // 2
    width = rotary_half - temporal - height
    pad_id = vocabulary.get("<|endoftext|>", tokenizer.pad_token_id)
    return Qwen2_5_VLConfig(
        text_config={
            "vocab_size": len(tokenizer),
            "hidden_size": shape.hidden_size,
            "intermediate_size": shape.intermediate_size,
            "num_hidden_layers": shape.num_layers,
            "num_attention_heads": shape.num_heads,
            "num_key_value_heads": shape.num_kv_heads,
            "max_position_embeddings": TINY_MAX_POSITIONS,
            "rope_parameters": {
                "rope_type": "default",
                "rope_theta": 1_000_000.0,
                "mrope_section": [temporal, height, width],
            },
            "bos_token_id": None,
            "eos_token_id": vocabulary["<|im_end|>"],
            "pad_token_id": pad_id,
            "initializer_range": shape.initializer_range,
        },
        vision_config={
            "depth": shape.vision_depth,
            "hidden_size": shape.vision_hidden_size,
            "intermediate_size": 2 * shape.vision_hidden_size,
            "num_heads": shape.vision_num_heads,
            "patch_size": 14,
            "spatial_merge_size": 2,
            "temporal_patch_size": 2,
            "out_hidden_size": shape.hidden_size,
            "window_size": 112,
            "fullatt_block_indexes": [shape.vision_depth - 1],
            "initializer_range": shape.initializer_range,
        },
        image_token_id=vocabulary["<|image_pad|>"],
        video_token_id=vocabulary["<|video_pad|>"],
        vision_start_token_id=vocabulary["<|vision_start|>"],
        vision_end_token_id=vocabulary["<|vision_end|>"],
        tie_word_embeddings=True,
    )


def build_tiny_vlm(
    tokenizer: PreTrainedTokenizerBase,
    *,
    shape: TinyVLMConfig | None = None,
    image_size: int | None = None,
    min_pixels: int = TINY_MIN_PIXELS,
    max_pixels: int = TINY_MAX_PIXELS,
    seed: int = 0,
) -> tuple[Qwen2_5_VLForConditionalGeneration, Qwen2_5_VLImageProcessor]:
    """A random-weight ``Qwen2_5_VLForConditionalGeneration`` and its processor, fully offline.

    The text model has ``vocab_size = len(tokenizer)``, tied input/output embeddings, GQA and
    multimodal RoPE; the vision tower has 14 px patches, a 2x2 merger and
    ``out_hidden_size = hidden_size``. Special ids (image, video, vision start/end, eos, pad)
    come from the tokenizer. Weights depend only on the arguments and `seed`: the global torch
    RNG is forked, so building a model does not disturb other random streams.

    Args:
        tokenizer: a Qwen2.5-style tokenizer (the real one or the tiny BPE).
        shape: text decoder and vision tower sizes and the weight init's std
            (:class:`TinyVLMConfig`, the ``model.tiny`` section of a run config; defaults if
            None). An init std of ~0.2 gives a peaked next-token distribution, useful in tests.
        image_size, min_pixels, max_pixels: pixel budget of the processor (:func:`build_processor`).
        seed: weight initialisation seed.

    Returns:
        ``(model, processor)``; the model is float32, in eval mode, on CPU.

    Example: with the tiny BPE (366 tokens) the defaults give ~0.17 M parameters; a prompt with
    one 112x112 image has 16 ``<|image_pad|>`` tokens and ``logits.shape[-1] == 366``.
    """
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise ValueError(f"seed must be an int, got {seed!r}")
    config = tiny_vlm_config(tokenizer, shape)
    processor = build_processor(
        tokenizer, image_size=image_size, min_pixels=min_pixels, max_pixels=max_pixels
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2_5_VLForConditionalGeneration(config)
    model.generation_config = default_generation_config(tokenizer)
    model.eval()
    return model, processor


def default_generation_config(tokenizer: PreTrainedTokenizerBase) -> GenerationConfig:
    """Generation defaults saved with our models: stop on ``<|im_end|>``/``<|endoftext|>``, pad with
    ``<|endoftext|>`` (what plain ``model.generate`` uses on a folder from :func:`save_policy`)."""
    vocabulary = tokenizer.get_vocab()
    return GenerationConfig(
        eos_token_id=stop_token_ids(tokenizer),
        pad_token_id=vocabulary.get("<|endoftext|>", tokenizer.pad_token_id),
        bos_token_id=None,
    )


def load_processor(path: str | os.PathLike[str]) -> ProcessorMixin:
    """The image+text processor of a local checkpoint folder.

    Tries ``AutoProcessor`` first (whatever the folder declares, e.g. Qwen3-VL's processor on a
    machine with torchvision). When that fails, typically because the declared processor builds
    a torchvision video processor, or when it yields a bare tokenizer, falls back to
    :class:`Qwen2_5_VLImageProcessor` made of the folder's tokenizer and a PIL image processor
    read from the folder's image-processor config.
    """
    folder = _check_model_folder(path)
    try:
        processor = AutoProcessor.from_pretrained(str(folder), local_files_only=True)
    except (ImportError, OSError, ValueError, TypeError, KeyError):
        processor = None
    if isinstance(processor, ProcessorMixin) and getattr(processor, "image_processor", None):
        return processor
    tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True)
    image_processor = _load_pil_image_processor(folder)
    return Qwen2_5_VLImageProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        chat_template=getattr(tokenizer, "chat_template", None),
    )


def _load_pil_image_processor(folder: Path) -> Qwen2VLImageProcessorPil:
    legacy = folder / "preprocessor_config.json"
    if legacy.is_file():
        return Qwen2VLImageProcessorPil.from_pretrained(str(folder), local_files_only=True)
    combined = folder / "processor_config.json"
    if combined.is_file():
        settings = json.loads(combined.read_text(encoding="utf-8")).get("image_processor")
        if isinstance(settings, dict):
            settings = {
                key: value
                for key, value in settings.items()
                if key not in ("image_processor_type", "processor_class")
            }
            return Qwen2VLImageProcessorPil(**settings)
    raise ValueError(
        f"model folder {folder} has no image processor config (preprocessor_config.json or an "
        "'image_processor' entry in processor_config.json): it is not a vision-language model"
    )


def load_policy(
    path: str | os.PathLike[str],
    *,
    dtype: str = "auto",
    device: str | torch.device = "cpu",
    attn_implementation: str | None = None,
) -> tuple[PreTrainedModel, ProcessorMixin]:
    """Load a local Hugging Face image-text-to-text checkpoint folder and its processor.

    Works for real Qwen2.5-VL-3B/7B or Qwen3-VL folders and for folders written by
    :func:`save_policy`. Never touches the network (``local_files_only=True``, and no Hub
    kernels: ``use_kernels=False``).

    Args:
        path: the folder (with ``config.json`` and weights).
        dtype: ``"auto"`` (the dtype stored in the config), ``"bfloat16"``, ``"float16"`` or
            ``"float32"``.
        device: where to put the model, e.g. ``"cuda"`` or ``"cpu"``.
        attn_implementation: passed to ``from_pretrained`` (``"sdpa"``,
            ``"flash_attention_2"``...); None keeps the transformers default.

    Returns:
        ``(model, processor)``; the model is in eval mode.

    Raises:
        FileNotFoundError: `path` does not exist.
        ValueError: `path` is not a model folder, or `dtype` is unknown.
    """
    folder = _check_model_folder(path)
    if dtype != "auto" and dtype not in DTYPES:
        raise ValueError(f"dtype must be 'auto' or one of {sorted(DTYPES)}, got {dtype!r}")
    torch_dtype: str | torch.dtype = "auto" if dtype == "auto" else DTYPES[dtype]
    # use_kernels=False: with the `kernels` package installed, transformers 5 swaps layers for
    # kernels fetched from the Hugging Face Hub when a model loads and again on every
    # train()/eval() switch. On a GPU without network that fails (the first GPU smoke run died in
    # Trainer's policy.train() on a resume), and with network it would change the numerics of a
    # run by what the Hub serves that day. The policy keeps transformers' own torch layers.
    options: dict[str, Any] = {
        "dtype": torch_dtype,
        "local_files_only": True,
        "use_kernels": False,
    }
    if attn_implementation is not None:
        options["attn_implementation"] = attn_implementation
    try:
        model = AutoModelForImageTextToText.from_pretrained(str(folder), **options)
    except ValueError as error:
        raise ValueError(
            f"{folder} does not hold an image-text-to-text model that transformers knows: {error}"
        ) from error
    model.to(device)
    model.eval()
    processor = load_processor(folder)
    return model, processor


def save_policy(
    model: PreTrainedModel, processor: ProcessorMixin, out_dir: str | os.PathLike[str]
) -> Path:
    """Write `model` and `processor` as a Hugging Face folder: config, safetensors, tokenizer,
    processor and generation config.

    Plain ``Qwen2_5_VLForConditionalGeneration.from_pretrained(out_dir)`` and
    :func:`load_policy` both load it. Pass the unwrapped model (not a DDP/FSDP wrapper).

    Returns:
        ``Path(out_dir)``.
    """
    if not isinstance(model, PreTrainedModel):
        raise ValueError(
            f"save_policy needs a transformers PreTrainedModel (unwrap DDP/FSDP first), got "
            f"{type(model).__name__}"
        )
    if not isinstance(processor, ProcessorMixin):
        raise ValueError(f"save_policy needs a processor, got {type(processor).__name__}")
    folder = Path(out_dir)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(str(folder))
    processor.save_pretrained(str(folder))
    return folder


def set_pixel_budget(
    processor: ProcessorMixin, *, min_pixels: int | None = None, max_pixels: int | None = None
) -> None:
    """Change how many pixels (hence vision tokens) each image of `processor` gets.

    Images are resized, aspect ratio kept, so their pixel count lies in ``[min_pixels,
    max_pixels]``; one vision token covers 28x28 px. None leaves that bound as it is. The
    budget is saved with the processor (``preprocessor_config.json``).

    Example: a released Qwen2.5-VL processor (max 12845056 px, ~16k tokens) with
    ``max_pixels=1280 * 28 * 28`` → a 2000x2000 image becomes 1008x1008 px, 1296 → 1280 tokens
    at most.
    """
    from transformers.image_utils import SizeDict

    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if size is None:
        raise ValueError(
            f"{type(processor).__name__} has no image processor with a pixel budget (size)"
        )
    low = min_pixels if min_pixels is not None else size["shortest_edge"]
    high = max_pixels if max_pixels is not None else size["longest_edge"]
    _check_positive_int("min_pixels", low)
    _check_positive_int("max_pixels", high)
    if low > high:
        raise ValueError(f"min_pixels ({low}) must not exceed max_pixels ({high})")
    image_processor.size = SizeDict(shortest_edge=int(low), longest_edge=int(high))


def pixel_budget(processor: Any) -> dict[str, int]:
    """``{"min_pixels": ..., "max_pixels": ...}`` of a Qwen-VL processor's image processor (for
    vLLM's ``mm_processor_kwargs``, so vLLM expands every image to the same number of vision
    tokens as the trainer's processor), or ``{}`` when it has none."""
    image_processor = getattr(processor, "image_processor", None)
    size = getattr(image_processor, "size", None)
    if size is None:
        return {}
    getter = size.get if isinstance(size, Mapping) else lambda key: getattr(size, key, None)
    low, high = getter("shortest_edge"), getter("longest_edge")
    if low is None or high is None:
        return {}
    return {"min_pixels": int(low), "max_pixels": int(high)}


def _check_model_folder(path: str | os.PathLike[str]) -> Path:
    folder = Path(path).expanduser()
    if not folder.exists():
        raise FileNotFoundError(f"model folder {folder} does not exist")
    if not folder.is_dir():
        raise ValueError(f"model path {folder} is a file, expected a Hugging Face model folder")
    if not (folder / "config.json").is_file():
        raise ValueError(f"{folder} is not a Hugging Face model folder: it has no config.json")
    return folder


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive int, got {value!r}")


def check_token_ids(name: str, token_ids: Sequence[int], vocab_size: int) -> list[int]:
    """Validate a list of token ids against a vocabulary size; returns it as a list of ints."""
    ids = list(token_ids)
    for token_id in ids:
        if isinstance(token_id, bool) or not isinstance(token_id, int):
            raise ValueError(f"{name} must hold ints, got {token_id!r}")
        if not 0 <= token_id < vocab_size:
            raise ValueError(
                f"{name} holds id {token_id}, outside the vocabulary [0, {vocab_size})"
            )
    return ids


def resolve_token_sets(
    tokenizer: Any,
    suppress_token_ids: Sequence[int] | None,
    stop_ids: Sequence[int] | None,
) -> tuple[list[int], list[int]]:
    """``(suppressed ids, stop ids)`` of a tokenizer or processor, sorted and checked against
    the vocabulary.

    None → :func:`care.models.vlm.vision_token_ids` / :func:`care.models.vlm.stop_token_ids`.
    Stop ids must be non-empty and must not be suppressed (a banned stop token could never end
    a response).

    Example (real Qwen2.5 tokenizer): ``(None, None)`` → ``([151652, ..., 151656], [151643,
    151645])``.
    """
    vocab_size = len(getattr(tokenizer, "tokenizer", tokenizer))
    suppressed = sorted(
        set(
            vision_token_ids(tokenizer)
            if suppress_token_ids is None
            else check_token_ids("suppress_token_ids", suppress_token_ids, vocab_size)
        )
    )
    stops = sorted(
        set(
            stop_token_ids(tokenizer)
            if stop_ids is None
            else check_token_ids("stop_ids", stop_ids, vocab_size)
        )
    )
    if not stops:
        raise ValueError("stop_ids must name at least one token")
    if set(stops) & set(suppressed):
        raise ValueError(
            f"stop ids {stops} and suppressed ids {suppressed} overlap: a suppressed stop token "
            "could never end a response"
        )
    return suppressed, stops
