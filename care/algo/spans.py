"""Find the ``<think>`` and ``<answer>`` regions of responses and map them onto tokens.

Matching tag token ids does not work on real tokenizers: Qwen2.5's BPE merges tag ends with
their neighbours (``.</``, ``>\\n``, ``><``), so ``</think>`` is rarely one token. Instead the
tags are found in the decoded response and each token is placed by the byte range it decodes
to. Those byte ranges come from a per-tokenizer table of token byte strings (byte-level BPE:
each character of a vocabulary entry stands for one byte), so the whole batch is assembled and
measured with tensor ops; only the tag search runs per row, on C-speed ``bytes.find``.

Searching the raw bytes rather than ``tokenizer.decode`` text gives the same positions for valid
UTF-8 (the tags are ASCII, and ASCII bytes never occur inside a multibyte character) and stays
exact when a response ends in, or contains, an incomplete UTF-8 sequence, where decoded text
would hold replacement characters of a different byte length.

Region rules (byte offsets of the content, tags excluded):
- think: after the first ``<think>`` up to the first ``</think>`` after it, else to the end.
- answer: after the LAST ``<answer>`` up to the first ``</answer>`` after it, else to the end.
- A token is in a region when at least one of its bytes lies in the region's content.
"""

from __future__ import annotations

import threading
import weakref
from dataclasses import dataclass
from typing import Any

import torch

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
ANSWER_OPEN = "<answer>"
ANSWER_CLOSE = "</answer>"


@dataclass(frozen=True)
class TagSpans:
    """Content spans of one response as ``(start, end)`` offsets, tags excluded; None if absent.

    Offsets are bytes of the response as `region_masks` reads it.
    """

    think: tuple[int, int] | None
    answer: tuple[int, int] | None

    @property
    def has_think(self) -> bool:
        return self.think is not None

    @property
    def has_answer(self) -> bool:
        return self.answer is not None


def _locate_spans(
    response: bytes, think_open: bytes, think_close: bytes, answer_open: bytes, answer_close: bytes
) -> TagSpans:
    think = None
    opened_at = response.find(think_open)
    if opened_at >= 0:
        start = opened_at + len(think_open)
        closed_at = response.find(think_close, start)
        think = (start, closed_at if closed_at >= 0 else len(response))
    answer = None
    opened_at = response.rfind(answer_open)
    if opened_at >= 0:
        start = opened_at + len(answer_open)
        closed_at = response.find(answer_close, start)
        answer = (start, closed_at if closed_at >= 0 else len(response))
    return TagSpans(think=think, answer=answer)


_BYTE_TAGS = tuple(
    tag.encode("ascii") for tag in (THINK_OPEN, THINK_CLOSE, ANSWER_OPEN, ANSWER_CLOSE)
)


@dataclass(frozen=True)
class RegionMasks:
    """Token masks of the think and answer regions of a batch of responses.

    think_mask:  bool [B, L]  think content tokens; rows without ``<think>`` get the whole response
                              (the fallback of docs/algorithm.md sections 2.2 and 5).
    answer_mask: bool [B, L]  answer content tokens as found (all False without ``<answer>``).
    has_think:   bool [B]     the response contains ``<think>``.
    has_answer:  bool [B]     the response contains ``<answer>``.
    think_len:   long [B]     tokens in the think content; the response length without ``<think>``.
    answer_len:  long [B]     tokens in the answer content; the response length without ``<answer>``.
    """

    think_mask: torch.Tensor
    answer_mask: torch.Tensor
    has_think: torch.Tensor
    has_answer: torch.Tensor
    think_len: torch.Tensor
    answer_len: torch.Tensor


@dataclass(frozen=True)
class TokenByteTable:
    """What every token id decodes to, as bytes, packed for vectorised gathering.

    byte_len:   long  [V]  bytes in each token's decoded form.
    byte_start: long  [V]  where each token's bytes start in `packed`.
    packed:     uint8 [N]  all tokens' bytes, concatenated in id order.
    """

    byte_len: torch.Tensor
    byte_start: torch.Tensor
    packed: torch.Tensor

    @property
    def vocab_size(self) -> int:
        return int(self.byte_len.numel())


def _byte_level_alphabet() -> dict[str, int]:
    """Character → byte map of byte-level BPE (GPT-2 scheme).

    Printable Latin-1 bytes stand for themselves; the other 68 bytes are shifted to code points
    256 and up, in byte order, so every vocabulary entry is printable text.
    """
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    char_to_byte = {chr(byte): byte for byte in printable}
    shifted = 0
    for byte in range(256):
        if byte not in printable:
            char_to_byte[chr(256 + shifted)] = byte
            shifted += 1
    return char_to_byte


_table_cache: weakref.WeakKeyDictionary[Any, TokenByteTable] = weakref.WeakKeyDictionary()
_table_lock = threading.Lock()


def token_byte_table(tokenizer: Any) -> TokenByteTable:
    """The byte table of a byte-level BPE tokenizer (``PreTrainedTokenizerFast``), built once.

    Added tokens (``<|im_end|>`` …) decode to their UTF-8 content. Ids the tokenizer does not
    know decode to nothing, as in ``tokenizer.decode``. A tokenizer whose entries are not
    byte-level text, or whose decoder disagrees with the table, raises ValueError.

    Example: for Qwen2.5, ``token_byte_table(tok).byte_len[3918]`` → 3 (the token ``.</``).
    """
    with _table_lock:
        table = _table_cache.get(tokenizer)
        if table is None:
            table = _build_token_byte_table(tokenizer)
            _table_cache[tokenizer] = table
        return table


def _build_token_byte_table(tokenizer: Any) -> TokenByteTable:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    if backend is None:
        raise ValueError(
            "tokenizer must be a fast (tokenizers-backed) byte-level BPE tokenizer, got "
            f"{type(tokenizer).__name__} without backend_tokenizer"
        )
    added = {
        token_id: token.content for token_id, token in backend.get_added_tokens_decoder().items()
    }
    vocab = backend.get_vocab(with_added_tokens=True)
    vocab_size = max(vocab.values()) + 1
    char_to_byte = _byte_level_alphabet()
    regular = {piece: token_id for piece, token_id in vocab.items() if token_id not in added}
    outside_alphabet = set("".join(regular)) - char_to_byte.keys()
    if outside_alphabet:
        example = next(piece for piece in regular if set(piece) & outside_alphabet)
        raise ValueError(
            f"tokenizer is not byte-level BPE: vocabulary entry {example!r} (id {regular[example]}) "
            "has characters outside the byte-level alphabet, so token byte offsets cannot be derived"
        )
    # Map every alphabet character to the Latin-1 character of its byte; encoding that text as
    # Latin-1 then yields the token's bytes (fast: str.translate runs in C).
    to_latin1 = {ord(char): byte for char, byte in char_to_byte.items()}
    token_bytes: list[bytes] = [b""] * vocab_size
    for piece, token_id in regular.items():
        token_bytes[token_id] = piece.translate(to_latin1).encode("latin-1")
    for token_id, content in added.items():
        token_bytes[token_id] = content.encode("utf-8")
    _check_table_against_decoder(backend, token_bytes, sorted(added))
    byte_len = torch.tensor([len(piece) for piece in token_bytes], dtype=torch.long)
    byte_start = torch.cumsum(byte_len, 0) - byte_len
    packed = torch.frombuffer(bytearray(b"".join(token_bytes)), dtype=torch.uint8)
    return TokenByteTable(byte_len=byte_len, byte_start=byte_start, packed=packed)


def _check_table_against_decoder(
    backend: Any, token_bytes: list[bytes], added_ids: list[int]
) -> None:
    # A spread sample of ids plus every added token, decoded one by one and as one sequence:
    # cheap, and catches decoders that do more than byte-level mapping (prefix-space stripping,
    # joining words with spaces) before any offsets are trusted.
    probe_ids = sorted(
        set(range(0, len(token_bytes), max(1, len(token_bytes) // 997))) | set(added_ids)
    )
    decoded = backend.decode_batch(
        [[token_id] for token_id in probe_ids], skip_special_tokens=False
    )
    for token_id, text in zip(probe_ids, decoded, strict=True):
        expected = token_bytes[token_id].decode("utf-8", errors="replace")
        if text != expected:
            raise ValueError(
                f"tokenizer decodes token {token_id} to {text!r} but its byte-level entry gives "
                f"{expected!r}; region_masks needs a plain byte-level BPE decoder"
            )
    # Whole-character tokens only, so the joined bytes are valid UTF-8 on both sides.
    sequence = [token_id for token_id in probe_ids if _is_utf8(token_bytes[token_id])]
    joined = backend.decode(sequence, skip_special_tokens=False)
    expected_joined = b"".join(token_bytes[token_id] for token_id in sequence).decode("utf-8")
    if joined != expected_joined:
        raise ValueError(
            "tokenizer decodes a token sequence to different text than the concatenation of its "
            "tokens' bytes (its decoder inserts or removes characters); region_masks needs a "
            "plain byte-level BPE decoder"
        )


def _is_utf8(piece: bytes) -> bool:
    try:
        piece.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return True


def region_masks(
    tokenizer: Any, response_ids: torch.Tensor, response_mask: torch.Tensor
) -> RegionMasks:
    """Think/answer token masks of a batch of responses, from tags found in the decoded bytes.

    Args:
        tokenizer: byte-level BPE ``PreTrainedTokenizerFast`` (Qwen2.5, the tiny test BPE).
        response_ids: long [B, L] response token ids; padding on either side.
        response_mask: bool [B, L] True on real response tokens. Only those are decoded and can
            be in a region; masked positions may hold any id.

    Returns:
        RegionMasks on the device of `response_ids` (see its fields). Tag-only tokens are in no
        region; a token that straddles a tag and content (``.</``, ``>\\n`` after ``<think>``) is
        in the region. Unclosed spans run to the end of the response, trailing special tokens
        such as ``<|im_end|>`` included. Ids outside the vocabulary decode to nothing.

    Example (Qwen2.5 pieces of "<think>\\n3+4=7.</think>\\n<answer>7</answer><|im_end|>"):
        pieces      <th ink >\\n 3 + 4 = 7 .</ think >\\n < answer > 7 </ answer > <|im_end|>
        think_mask   0   0   1  1 1 1 1 1  1    0    0  0   0    0 0  0    0    0      0
        answer_mask  0   0   0  0 0 0 0 0  0    0    0  0   0    0 1  0    0    0      0
        think_len = 7, answer_len = 1
    """
    _check_region_inputs(response_ids, response_mask)
    device = response_ids.device
    ids = response_ids.detach().to("cpu", torch.long)
    real = response_mask.detach().to("cpu", torch.bool)
    table = token_byte_table(tokenizer)

    known = real & (ids >= 0) & (ids < table.vocab_size)
    lookup_ids = torch.where(known, ids, torch.zeros_like(ids))
    token_len = torch.where(known, table.byte_len[lookup_ids], torch.zeros_like(ids))  # [B, L]
    token_end = torch.cumsum(token_len, dim=1)
    token_start = token_end - token_len
    row_len = token_len.sum(dim=1)

    row_bytes = _gather_row_bytes(table, lookup_ids[known], token_len[known], row_len)
    spans = [_locate_spans(response, *_BYTE_TAGS) for response in row_bytes]
    think_bounds, has_think = _span_bounds([span.think for span in spans])
    answer_bounds, has_answer = _span_bounds([span.answer for span in spans])

    think_found = _tokens_overlapping(token_start, token_end, think_bounds) & real
    answer_mask = _tokens_overlapping(token_start, token_end, answer_bounds) & real
    think_mask = torch.where(has_think[:, None], think_found, real)
    response_len = real.sum(dim=1)
    think_len = torch.where(has_think, think_mask.sum(dim=1), response_len)
    answer_len = torch.where(has_answer, answer_mask.sum(dim=1), response_len)
    return RegionMasks(
        think_mask=think_mask.to(device),
        answer_mask=answer_mask.to(device),
        has_think=has_think.to(device),
        has_answer=has_answer.to(device),
        think_len=think_len.to(device),
        answer_len=answer_len.to(device),
    )


def _check_region_inputs(response_ids: torch.Tensor, response_mask: torch.Tensor) -> None:
    if not isinstance(response_ids, torch.Tensor) or response_ids.dim() != 2:
        raise ValueError(f"response_ids must be a 2-D tensor [B, L], got {_describe(response_ids)}")
    dtype = response_ids.dtype
    if dtype.is_floating_point or dtype.is_complex or dtype == torch.bool:
        raise ValueError(
            f"response_ids must hold integer token ids, got dtype {response_ids.dtype}"
        )
    if not isinstance(response_mask, torch.Tensor) or response_mask.dtype != torch.bool:
        raise ValueError(f"response_mask must be a bool tensor, got {_describe(response_mask)}")
    if response_mask.shape != response_ids.shape:
        raise ValueError(
            f"response_mask shape {tuple(response_mask.shape)} must equal response_ids shape "
            f"{tuple(response_ids.shape)}"
        )


def _describe(value: object) -> str:
    if isinstance(value, torch.Tensor):
        return f"tensor of shape {tuple(value.shape)} and dtype {value.dtype}"
    return type(value).__name__


def _gather_row_bytes(
    table: TokenByteTable, flat_ids: torch.Tensor, flat_len: torch.Tensor, row_len: torch.Tensor
) -> list[bytes]:
    """Each row's decoded bytes, from the real tokens' ids in row-major order.

    One gather over the whole batch: byte k of the output comes from
    ``packed[byte_start[id] + (k - output start of that token)]``.
    """
    total = int(flat_len.sum())
    if total == 0:
        return [b""] * row_len.numel()
    output_start = torch.cumsum(flat_len, 0) - flat_len
    source_shift = torch.repeat_interleave(table.byte_start[flat_ids] - output_start, flat_len)
    batch_bytes = table.packed[source_shift + torch.arange(total)].numpy().tobytes()
    row_end = torch.cumsum(row_len, 0).tolist()
    row_begin = [0, *row_end[:-1]]
    return [batch_bytes[begin:end] for begin, end in zip(row_begin, row_end, strict=True)]


def _span_bounds(spans: list[tuple[int, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    """[B, 2] (start, end) with (0, 0) for a missing span, and the bool [B] found flags."""
    bounds = torch.tensor(
        [span if span is not None else (0, 0) for span in spans], dtype=torch.long
    )
    found = torch.tensor([span is not None for span in spans], dtype=torch.bool)
    return bounds.reshape(len(spans), 2), found


def _tokens_overlapping(
    token_start: torch.Tensor, token_end: torch.Tensor, bounds: torch.Tensor
) -> torch.Tensor:
    """bool [B, L]: token bytes [start, end) share at least one byte with the row's span."""
    span_start = bounds[:, :1]
    span_end = bounds[:, 1:]
    return torch.maximum(token_start, span_start) < torch.minimum(token_end, span_end)
