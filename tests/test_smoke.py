"""The GPU smoke check's code path, run on the CPU at tiny sizes."""

from __future__ import annotations

from care.smoke import main


def test_smoke_check_trains_care_steps_and_times_the_advantage_kernel(tmp_path, capsys):
    report = main(
        [
            "--device",
            "cpu",
            "--dtype",
            "float32",
            "--steps",
            "2",
            "--small",
            "--repeats",
            "2",
            "--out",
            str(tmp_path),
        ]
    )
    assert [s["step"] for s in report["steps"]] == [1, 2]
    assert all(s["time/step"] > 0 for s in report["steps"])
    assert report["advantages"]["care_advantages_ms"] > 0
    assert report["environment"]["device"] == "cpu"
    printed = capsys.readouterr().out
    assert printed.count("step: ") == 2 and "advantages: " in printed
