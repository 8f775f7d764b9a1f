"""Tag spans mapped to tokens, checked on the real Qwen2.5 vocabulary (and the tiny test BPE).

The Qwen2.5 tokenizer comes from the session fixture in conftest.py: the first run on a machine
builds it (5-10 s) and caches it; later runs load the cached folder.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import care.models.tokenizer as tokenizer_module
from care.algo.spans import region_masks, token_byte_table
from care.models.tokenizer import (
    QWEN2_5_ADDED_TOKENS,
    QWEN2_5_BUILD_VERSION,
    load_qwen2_5_tokenizer,
    qwen2_5_tokenizer_cache_root,
    train_tiny_bpe_tokenizer,
)

USUAL_LAYOUT = "<think>\nFirst, 3+4=7.</think>\n<answer>7</answer><|im_end|>"


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer.encode(text, add_special_tokens=False)


def masks_of(tokenizer, ids: list[int]):
    response_ids = torch.tensor([ids])
    return region_masks(tokenizer, response_ids, torch.ones_like(response_ids, dtype=torch.bool))


def as_bits(mask: torch.Tensor) -> list[int]:
    return [int(bit) for bit in mask.tolist()]


# --- the vocabulary the span tests stand on ---------------------------------------------------


def test_qwen_tokenizer_has_151665_ids_with_the_qwen2_5_added_tokens_in_order(qwen_tokenizer):
    assert len(qwen_tokenizer) == 151665
    ids = qwen_tokenizer.convert_tokens_to_ids([content for content, _ in QWEN2_5_ADDED_TOKENS])
    assert ids == list(range(151643, 151665))
    assert qwen_tokenizer.convert_tokens_to_ids("<|im_end|>") == 151645
    assert qwen_tokenizer.convert_tokens_to_ids("<|vision_start|>") == 151652
    assert qwen_tokenizer.convert_tokens_to_ids("<|image_pad|>") == 151655
    assert qwen_tokenizer.convert_tokens_to_ids("<|file_sep|>") == 151664
    assert qwen_tokenizer.eos_token_id == 151645
    assert qwen_tokenizer.pad_token_id == 151643
    assert qwen_tokenizer.bos_token is None


def test_qwen_tool_call_tokens_are_not_special_like_in_qwen2_5(qwen_tokenizer):
    # Qwen2.5 marks <tool_call> as a plain added token: skip_special_tokens keeps it.
    text = qwen_tokenizer.decode([151657, 151645, 151655], skip_special_tokens=True)
    assert text == "<tool_call>"


def test_qwen_tokenizer_reproduces_published_qwen2_5_ids(qwen_tokenizer):
    # Ids as printed by code that tokenised with the real Qwen2/Qwen2.5 tokenizers.
    assert encode(qwen_tokenizer, "Hello world") == [9707, 1879]
    assert encode(qwen_tokenizer, "How many r in strawberry.") == [4340, 1657, 435, 304, 72600, 13]
    assert encode(qwen_tokenizer, "What is 2+2?") == [3838, 374, 220, 17, 10, 17, 30]
    messages = [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "您好, 请从 1 数到 10000000."},
    ]
    prompt = qwen_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert encode(qwen_tokenizer, prompt) == [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198, 151644, 872, 198,
        111308, 11, 220, 14880, 45181, 220, 16, 47685, 26939, 220, 16, 15, 15, 15, 15, 15, 15,
        15, 13, 151645, 198, 151644, 77091, 198,
    ]  # fmt: skip


def test_qwen_chat_template_adds_default_system_prompt_and_image_placeholder(qwen_tokenizer):
    messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}]
    prompt = qwen_tokenizer.apply_chat_template(
        messages, tokenize=False, add_generation_prompt=True
    )
    assert prompt == (
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n"
        "<|im_start|>user\n<|vision_start|><|image_pad|><|vision_end|>Q?<|im_end|>\n"
        "<|im_start|>assistant\n"
    )
    assert encode(qwen_tokenizer, prompt)[:17] == [
        151644, 8948, 198, 2610, 525, 264, 10950, 17847, 13, 151645, 198,
        151644, 872, 198, 151652, 151655, 151653,
    ]  # fmt: skip


def test_qwen_tokenizer_matches_qwens_tiktoken_encoder_and_round_trips(
    qwen_tokenizer, qwen_reference_encoding
):
    text = (
        "<think>\nThe triangle's base is 6 cm; height = 4 cm.\n\nArea = ½·6·4 = 12 cm².\n</think>\n"
        "<answer>12</answer><|im_end|>面积是 12 cm²。  def f(x):\n\treturn x**2  # 😀 café\r\n"
        "<|vision_start|><|image_pad|><|vision_end|> I'll   check   it's OK 1234567"
    )
    ids = encode(qwen_tokenizer, text)
    assert ids == qwen_reference_encoding.encode(text, allowed_special="all")
    assert qwen_tokenizer.decode(ids, skip_special_tokens=False) == text


def test_tag_ends_merge_with_neighbours_into_single_qwen_tokens(qwen_tokenizer):
    assert encode(qwen_tokenizer, ">\n") == [397]
    assert encode(qwen_tokenizer, ".</") == [3918]
    assert encode(qwen_tokenizer, "><") == [1784]
    assert encode(qwen_tokenizer, "</think>") == [522, 26865, 29]  # '</' 'think' '>'


def test_token_byte_table_matches_reference_bytes_of_every_qwen_token(
    qwen_tokenizer, qwen_reference_encoding
):
    table = token_byte_table(qwen_tokenizer)
    assert table.vocab_size == 151665
    expected = [
        len(qwen_reference_encoding.decode_single_token_bytes(token_id))
        for token_id in range(151665)
    ]
    assert table.byte_len.tolist() == expected
    assert table.byte_len[151645].item() == len("<|im_end|>")
    start = table.byte_start[3918].item()
    assert table.packed[start : start + 3].numpy().tobytes() == b".</"


def test_saved_qwen_tokenizer_is_loaded_from_cache_without_rebuilding(qwen_tokenizer, monkeypatch):
    def no_rebuild():
        raise AssertionError("the cached tokenizer folder should have been loaded")

    monkeypatch.setattr(tokenizer_module, "_loaded_qwen_tokenizers", {})
    monkeypatch.setattr(tokenizer_module, "build_qwen2_5_tokenizer", no_rebuild)
    reloaded = load_qwen2_5_tokenizer()
    assert reloaded is not qwen_tokenizer
    assert encode(reloaded, USUAL_LAYOUT) == encode(qwen_tokenizer, USUAL_LAYOUT)
    assert reloaded.chat_template == qwen_tokenizer.chat_template
    assert load_qwen2_5_tokenizer() is reloaded  # memoised in process


def test_qwen_cache_is_written_atomically_under_a_version_key(
    qwen_tokenizer, monkeypatch, tmp_path
):
    builds = []

    def build_from_fixture():
        builds.append(1)
        return qwen_tokenizer

    monkeypatch.setattr(tokenizer_module, "_loaded_qwen_tokenizers", {})
    monkeypatch.setattr(tokenizer_module, "build_qwen2_5_tokenizer", build_from_fixture)
    loaded = load_qwen2_5_tokenizer(cache_dir=tmp_path)
    folder = tmp_path / QWEN2_5_BUILD_VERSION
    assert builds == [1]
    assert sorted(path.name for path in tmp_path.iterdir()) == [QWEN2_5_BUILD_VERSION]
    assert (folder / "tokenizer.json").is_file()
    assert encode(loaded, "Hello world") == [9707, 1879]
    # A second builder that loses the race keeps the first folder and leaves no staging folder.
    tokenizer_module._build_and_save_qwen_tokenizer(folder)
    assert builds == [1, 1]
    assert sorted(path.name for path in tmp_path.iterdir()) == [QWEN2_5_BUILD_VERSION]


def test_qwen_cache_root_follows_argument_then_care_cache_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("CARE_CACHE_DIR", str(tmp_path / "care"))
    assert qwen2_5_tokenizer_cache_root() == tmp_path / "care" / "qwen2_5_tokenizer"
    assert qwen2_5_tokenizer_cache_root(tmp_path / "mine") == tmp_path / "mine"
    monkeypatch.delenv("CARE_CACHE_DIR")
    assert qwen2_5_tokenizer_cache_root().parts[-3:] == (".cache", "care", "qwen2_5_tokenizer")


def test_tiny_bpe_is_deterministic_and_shares_the_added_token_strings():
    texts = tuple(tokenizer_module._tiny_bpe_builtin_corpus())
    first = tokenizer_module._train_tiny_bpe(512, texts)
    second = tokenizer_module._train_tiny_bpe(512, texts)
    assert first.backend_tokenizer.to_str() == second.backend_tokenizer.to_str()
    added = [content for content, _ in QWEN2_5_ADDED_TOKENS]
    added_ids = first.convert_tokens_to_ids(added)
    assert added_ids == list(range(len(first) - 22, len(first)))
    assert first.eos_token == "<|im_end|>" and first.pad_token == "<|endoftext|>"
    assert first.decode([added_ids[14]], skip_special_tokens=True) == "<tool_call>"
    assert train_tiny_bpe_tokenizer() is train_tiny_bpe_tokenizer()


def test_tiny_bpe_round_trips_and_merges_tag_ends(tiny_bpe_tokenizer):
    text = "<think>\n面积是 12 cm²。</think>\n<answer>12</answer><|im_end|> unseen wörds 😀"
    ids = encode(tiny_bpe_tokenizer, text)
    assert tiny_bpe_tokenizer.decode(ids, skip_special_tokens=False) == text
    assert len(encode(tiny_bpe_tokenizer, ".</")) == 1
    assert len(encode(tiny_bpe_tokenizer, ">\n")) == 1


@pytest.mark.parametrize("vocab_size", [256, 0, 12.5, True])
def test_tiny_bpe_rejects_a_vocab_size_below_the_byte_alphabet(vocab_size):
    with pytest.raises(ValueError, match="vocab_size"):
        train_tiny_bpe_tokenizer(vocab_size=vocab_size)


def test_tiny_bpe_rejects_a_bare_string_corpus():
    with pytest.raises(ValueError, match="corpus"):
        train_tiny_bpe_tokenizer(corpus="<think>1</think>")


# --- region_masks on the real Qwen2.5 vocabulary -----------------------------------------------


def test_usual_layout_masks_on_qwen_tokens(qwen_tokenizer):
    ids = encode(qwen_tokenizer, USUAL_LAYOUT)
    pieces = qwen_tokenizer.convert_ids_to_tokens(ids)
    assert pieces == [
        "<th", "ink", ">Ċ", "First", ",", "Ġ", "3", "+", "4", "=", "7", ".</", "think", ">Ċ",
        "<", "answer", ">", "7", "</", "answer", ">", "<|im_end|>",
    ]  # fmt: skip
    masks = masks_of(qwen_tokenizer, ids)
    # '>Ċ' holds the newline after <think> (content); '.</' holds the final '.' (content).
    assert as_bits(masks.think_mask[0]) == [0, 0] + [1] * 10 + [0] * 10
    assert as_bits(masks.answer_mask[0]) == [0] * 17 + [1] + [0] * 4
    assert masks.has_think.tolist() == [True] and masks.has_answer.tolist() == [True]
    assert masks.think_len.tolist() == [10] and masks.answer_len.tolist() == [1]


def test_naive_tag_id_matching_finds_no_think_span_where_region_masks_does(qwen_tokenizer):
    ids = encode(qwen_tokenizer, USUAL_LAYOUT)
    close_tag_ids = encode(qwen_tokenizer, "</think>")

    def contains(sequence: list[int], part: list[int]) -> bool:
        return any(sequence[i : i + len(part)] == part for i in range(len(sequence)))

    # The reference code's approach: look for the ids of the tag itself.
    assert not contains(ids, close_tag_ids)
    assert not contains(ids, encode(qwen_tokenizer, "\n</think>\n"))
    masks = masks_of(qwen_tokenizer, ids)
    assert masks.has_think.item() and masks.think_len.item() == 10


@dataclass(frozen=True)
class Layout:
    """A response as labelled segments; the labels name the region(s) a segment's bytes are in."""

    name: str
    segments: tuple[tuple[str, tuple[str, ...]], ...]
    has_think: bool
    has_answer: bool

    @property
    def text(self) -> str:
        return "".join(segment for segment, _ in self.segments)

    def content_bytes(self, region: str) -> tuple[int, int] | None:
        """Byte range covered by the segments labelled `region` (they are contiguous)."""
        position, covered = 0, []
        for segment, labels in self.segments:
            size = len(segment.encode("utf-8"))
            if region in labels:
                covered.append((position, position + size))
            position += size
        return (covered[0][0], covered[-1][1]) if covered else None


T, A, TA, NONE = ("think",), ("answer",), ("think", "answer"), ()
LAYOUTS = [
    Layout(
        "usual",
        (("<think>", NONE), ("\nFirst, 3+4=7.", T), ("</think>", NONE), ("\n<answer>", NONE),
         ("7", A), ("</answer><|im_end|>", NONE)),
        True, True,
    ),
    Layout(
        "newline before close tag",
        (("<think>", NONE), ("\nThe area is 12.\n", T), ("</think>\n<answer>", NONE), ("12", A),
         ("</answer><|im_end|>", NONE)),
        True, True,
    ),
    Layout(
        "tags touching: ><",
        (("<think>", NONE), ("3+4=7", T), ("</think><answer>", NONE), ("7", A),
         ("</answer>", NONE)),
        True, True,
    ),
    Layout(
        "no think",
        (("The sum is 7.\n<answer>", NONE), ("7", A), ("</answer>", NONE)),
        False, True,
    ),
    Layout(
        "no answer",
        (("<think>", NONE), ("\n3+4=7.", T), ("</think>\nThe answer is 7.<|im_end|>", NONE)),
        True, False,
    ),
    Layout("unclosed think", (("<think>", NONE), ("\nLet me think about 3+4", T)), True, False),
    Layout(
        "multibyte",
        (("<think>", NONE), ("\n面积是 12 cm²。", T), ("</think>\n<answer>", NONE), ("12 cm²", A),
         ("</answer>", NONE)),
        True, True,
    ),
    Layout(
        "two answers: the last counts",
        (("<answer>5</answer> wait, <answer>", NONE), ("7", A), ("</answer>", NONE)),
        False, True,
    ),
    Layout(
        "two thinks: the first counts",
        (("<think>", NONE), ("a", T), ("</think><think>b</think><answer>", NONE), ("5", A),
         ("</answer>", NONE)),
        True, True,
    ),
    Layout(
        "no tags, a stray close tag",
        (("no tags at all </think>", NONE),),
        False, False,
    ),
    Layout(
        "unclosed answer runs to the end",
        (("<think>", NONE), ("x", T), ("</think><answer>", NONE), ("7<|im_end|>", A)),
        True, True,
    ),
    Layout(
        "empty think",
        (("<think></think><answer>", NONE), ("7", A), ("</answer>", NONE)),
        True, True,
    ),
    Layout(
        "unclosed think over the answer",
        (("<think>", NONE), ("\n3+4=7. <answer>", T), ("7", TA), ("</answer>", T)),
        True, True,
    ),
]  # fmt: skip


def expected_masks(pieces: list[bytes], layout: Layout) -> tuple[list[int], list[int], int, int]:
    """Think/answer bits of each token from its own bytes, by plain byte-range overlap."""
    think = layout.content_bytes("think")
    answer = layout.content_bytes("answer")
    think_bits, answer_bits, position = [], [], 0
    for piece in pieces:
        start, end = position, position + len(piece)
        position = end
        think_bits.append(int(think is not None and max(start, think[0]) < min(end, think[1])))
        answer_bits.append(int(answer is not None and max(start, answer[0]) < min(end, answer[1])))
    if not layout.has_think:
        think_bits = [1] * len(pieces)
    think_len = sum(think_bits)
    answer_len = sum(answer_bits) if layout.has_answer else len(pieces)
    return think_bits, answer_bits, think_len, answer_len


@pytest.mark.parametrize("layout", LAYOUTS, ids=[layout.name for layout in LAYOUTS])
def test_region_masks_match_byte_overlap_of_each_qwen_token(
    layout, qwen_tokenizer, qwen_reference_encoding
):
    ids = encode(qwen_tokenizer, layout.text)
    pieces = [qwen_reference_encoding.decode_single_token_bytes(token_id) for token_id in ids]
    assert b"".join(pieces) == layout.text.encode("utf-8")
    think_bits, answer_bits, think_len, answer_len = expected_masks(pieces, layout)
    masks = masks_of(qwen_tokenizer, ids)
    assert as_bits(masks.think_mask[0]) == think_bits
    assert as_bits(masks.answer_mask[0]) == answer_bits
    assert masks.has_think.tolist() == [layout.has_think]
    assert masks.has_answer.tolist() == [layout.has_answer]
    assert masks.think_len.tolist() == [think_len]
    assert masks.answer_len.tolist() == [answer_len]


def test_multibyte_token_straddling_a_tag_counts_as_content(qwen_tokenizer):
    # '。</' is one token: the full stop (3 bytes of content) and the start of </think>.
    ids = encode(qwen_tokenizer, "<think>\n面积是 12 cm²。</think>")
    assert qwen_tokenizer.convert_ids_to_tokens(ids)[-3:] == ["ãĢĤ</", "think", ">"]
    think_bits = as_bits(masks_of(qwen_tokenizer, ids).think_mask[0])
    assert think_bits == [0, 0] + [1] * 9 + [0, 0]


def test_region_masks_handle_left_and_right_padding_and_ignore_padded_ids(
    qwen_tokenizer, qwen_reference_encoding
):
    rows = [encode(qwen_tokenizer, layout.text) for layout in LAYOUTS]
    width = max(len(row) for row in rows) + 3
    # Padding holds the ids of "<answer>": a mask that looked at them would find a span.
    filler = encode(qwen_tokenizer, "<answer>") * width
    batch, real = [], []
    for index, row in enumerate(rows):
        pad = width - len(row)
        if index % 2 == 0:  # left padding
            batch.append(filler[:pad] + row)
            real.append([False] * pad + [True] * len(row))
        else:
            batch.append(row + filler[:pad])
            real.append([True] * len(row) + [False] * pad)
    masks = region_masks(qwen_tokenizer, torch.tensor(batch), torch.tensor(real))
    assert masks.think_mask.shape == (len(LAYOUTS), width)
    for index, (layout, row) in enumerate(zip(LAYOUTS, rows, strict=True)):
        pieces = [qwen_reference_encoding.decode_single_token_bytes(token_id) for token_id in row]
        think_bits, answer_bits, think_len, answer_len = expected_masks(pieces, layout)
        keep = torch.tensor(real[index])
        assert not masks.think_mask[index][~keep].any()
        assert not masks.answer_mask[index][~keep].any()
        assert as_bits(masks.think_mask[index][keep]) == think_bits, layout.name
        assert as_bits(masks.answer_mask[index][keep]) == answer_bits, layout.name
        assert masks.think_len[index].item() == think_len
        assert masks.answer_len[index].item() == answer_len
        assert masks.has_think[index].item() == layout.has_think


def test_region_masks_dtypes_and_an_empty_response(qwen_tokenizer):
    response_ids = torch.tensor([encode(qwen_tokenizer, USUAL_LAYOUT), [0] * 22])
    response_mask = torch.ones_like(response_ids, dtype=torch.bool)
    response_mask[1] = False
    masks = region_masks(qwen_tokenizer, response_ids, response_mask)
    assert masks.think_mask.dtype == torch.bool and masks.answer_mask.dtype == torch.bool
    assert masks.has_think.dtype == torch.bool and masks.think_len.dtype == torch.long
    assert masks.think_len.tolist() == [10, 0] and masks.answer_len.tolist() == [1, 0]
    assert masks.has_think.tolist() == [True, False]
    assert not masks.think_mask[1].any() and not masks.answer_mask[1].any()
    no_tokens = region_masks(
        qwen_tokenizer, torch.zeros(2, 0, dtype=torch.long), torch.zeros(2, 0, dtype=torch.bool)
    )
    assert no_tokens.think_mask.shape == (2, 0) and no_tokens.think_len.tolist() == [0, 0]


def test_region_masks_stay_exact_on_a_response_cut_inside_a_multibyte_character(qwen_tokenizer):
    ids = encode(qwen_tokenizer, "<think>\n龘")
    assert qwen_tokenizer.convert_ids_to_tokens(ids) == ["<th", "ink", ">Ċ", "é¾", "ĺ"]
    cut = ids[:-1]  # ends with two of the character's three bytes
    decoded = qwen_tokenizer.decode(cut, skip_special_tokens=False)
    assert decoded == "<think>\n\ufffd"  # decoded text no longer has the tokens' byte length
    masks = masks_of(qwen_tokenizer, cut)
    assert as_bits(masks.think_mask[0]) == [0, 0, 1, 1]
    assert masks.think_len.tolist() == [2]


def test_ids_outside_the_vocabulary_decode_to_nothing_and_join_no_region(qwen_tokenizer):
    # Qwen2.5-VL's embedding has 151936 rows, so a random policy can sample ids past 151664.
    ids = encode(qwen_tokenizer, "<think>") + [151900] + encode(qwen_tokenizer, "a</think>")
    assert len(ids) == 8  # '<th' 'ink' '>' [151900] 'a' '</' 'think' '>'
    masks = masks_of(qwen_tokenizer, ids)
    assert as_bits(masks.think_mask[0]) == [0, 0, 0, 0, 1, 0, 0, 0]
    assert masks.think_len.tolist() == [1]


def test_region_masks_on_the_tiny_bpe(tiny_bpe_tokenizer):
    ids = encode(tiny_bpe_tokenizer, USUAL_LAYOUT)
    pieces = tiny_bpe_tokenizer.convert_ids_to_tokens(ids)
    assert pieces == [
        "<think", ">Ċ", "First", ",", "Ġ", "3", "+", "4", "=", "7", ".</", "think", ">Ċ",
        "<answer", ">", "7", "</", "answer", ">", "<|im_end|>",
    ]  # fmt: skip
    masks = masks_of(tiny_bpe_tokenizer, ids)
    assert as_bits(masks.think_mask[0]) == [0] + [1] * 10 + [0] * 9
    assert as_bits(masks.answer_mask[0]) == [0] * 15 + [1] + [0] * 4


def test_region_masks_on_a_large_batch(qwen_tokenizer):
    token_byte_table(qwen_tokenizer)  # built once per tokenizer, outside the timed part
    generator = torch.Generator().manual_seed(0)
    response_ids = torch.randint(0, 151665, (64, 2048), generator=generator)
    row = torch.tensor(encode(qwen_tokenizer, USUAL_LAYOUT))
    response_ids[:, : row.numel()] = row
    masks = region_masks(
        qwen_tokenizer, response_ids, torch.ones_like(response_ids, dtype=torch.bool)
    )
    assert masks.has_think.all()


@pytest.mark.parametrize(
    ("response_ids", "response_mask", "message"),
    [
        (torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool), "integer token ids"),
        (torch.zeros(3, dtype=torch.long), torch.ones(3, dtype=torch.bool), "2-D tensor"),
        (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 3), "bool tensor"),
        (torch.zeros(2, 3, dtype=torch.long), torch.ones(2, 4, dtype=torch.bool), "must equal"),
    ],
)
def test_region_masks_reject_bad_inputs(tiny_bpe_tokenizer, response_ids, response_mask, message):
    with pytest.raises(ValueError, match=message):
        region_masks(tiny_bpe_tokenizer, response_ids, response_mask)


def test_region_masks_reject_a_tokenizer_that_is_not_byte_level():
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.WordLevel({"hello": 0, "world": 1, "[UNK]": 2}, unk_token="[UNK]"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    word_level = PreTrainedTokenizerFast(tokenizer_object=backend, unk_token="[UNK]")
    with pytest.raises(ValueError, match="byte-level BPE"):
        region_masks(word_level, torch.tensor([[0, 1]]), torch.ones(1, 2, dtype=torch.bool))
