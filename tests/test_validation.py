"""`train.eval_every`: greedy accuracy on a held-out validation split, before the first step and
every N steps, written into steps.jsonl as val/acc, val/acc/<family>, val/acc/difficulty_<k>."""

from __future__ import annotations

import json

import pytest
from tiny_run import ScriptedEngine, tiny_config, write_choice_dataset

from care.config import ConfigError, config_from_dict
from care.runlog import RunReader
from care.train.trainer import Trainer


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("validation")
    write_choice_dataset(out, 4, lambda index: "ABCD"[index % 4])
    val = write_choice_dataset(out, 8, lambda index: "ABCD"[index % 4], name="val")
    # Families and difficulties, as the synthetic task's rows carry them.
    rows = [json.loads(line) for line in val.read_text().splitlines()]
    for index, row in enumerate(rows):
        row.update(family="even" if index % 2 == 0 else "odd", difficulty=1 + index // 4)
    val.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return out


def test_validation_runs_before_the_first_step_every_n_steps_and_at_the_end(data_dir, tmp_path):
    cfg = config_from_dict(
        tiny_config(
            data_dir,
            tmp_path,
            "val",
            data={"val_files": [str(data_dir / "val.jsonl")]},
            train={"steps": 5, "eval_every": 2, "prompts_per_step": 2, "mini_batch_prompts": 2},
        )
    )
    trainer = Trainer(cfg, progress=False)
    questions = {ex.question: ex.answer for ex in trainer.examples + trainer.val_examples}
    val_questions = [ex.question for ex in trainer.val_examples]

    def script(question, answer, sample, is_repair):
        # Validation asks for one greedy sample; "Item k" of the validation split is answered
        # right when k < number of validation calls so far (0, 1, 2, ...: a policy that improves).
        if question in val_questions and len(engine.calls) and engine.calls[-1] == val_questions:
            rounds = sum(1 for call in engine.calls if call == val_questions)
            right = val_questions.index(question) < 2 * (rounds - 1)
        else:
            right = sample == 0
        return f"<think>\nok\n</think>\n<answer>{answer if right else 'none'}</answer>"

    engine = trainer.engine = ScriptedEngine(trainer.processor, questions, script)
    trainer.fit()
    steps = RunReader(cfg.run_dir).steps
    validated = {s["step"]: s for s in steps if "val/acc" in s}
    # Before step 1 (logged as step 0), after steps 2 and 4, and after the last step (5).
    assert sorted(validated) == [0, 2, 4, 5]
    assert [validated[s]["val/acc"] for s in (0, 2, 4, 5)] == [0.0, 0.25, 0.5, 0.75]
    assert validated[0].keys() >= {"val/acc", "val/fmt", "val/n"}
    assert "acc/mean" not in validated[0]  # step 0 is the starting policy, not a training step
    # Rows 0..3 are difficulty 1, rows 4..7 difficulty 2; even rows are "even".
    assert (
        validated[4]["val/acc/difficulty_1"] == 1.0 and validated[4]["val/acc/difficulty_2"] == 0.0
    )
    assert validated[5]["val/acc/even"] == 0.75 and validated[5]["val/acc/odd"] == 0.75
    assert validated[5]["val/n"] == 8 and validated[5]["val/fmt"] == 1.0
    assert all("val/acc" not in s for s in steps if s["step"] in (1, 3))


def test_eval_every_without_validation_files_and_files_without_eval_every_are_errors(
    data_dir, tmp_path
):
    with pytest.raises(ConfigError, match="train.eval_every=3 needs data.val_files"):
        config_from_dict(tiny_config(data_dir, tmp_path, "x", train={"eval_every": 3}))
    with pytest.raises(ConfigError, match="would never be scored"):
        config_from_dict(
            tiny_config(data_dir, tmp_path, "x", data={"val_files": [str(data_dir / "val.jsonl")]})
        )
