"""The README demo tunes its two concepts side by side (one CPU thread each): both run to the end with their output
in a log of their own and one line of timing, and a failing one stops the other and names its log."""

import pytest

from mos_lightning.world.demo import Demo


def test_commands_side_by_side_each_log_their_output_and_time_as_one_stage(tmp_path):
    demo = Demo(["buoyring", "moonball"], tmp_path)
    demo.side_by_side({"help-fit": ["fit", "--help"], "help-predict": ["predict", "--help"]})
    assert "--trainer" in (tmp_path / "logs" / "help-fit.log").read_text()
    assert "--trainer" in (tmp_path / "logs" / "help-predict.log").read_text()
    (line,) = demo.timing.read_text().splitlines()
    assert line.split("\t")[0] == "help-fit+help-predict"


def test_a_failing_command_stops_the_demo_and_names_its_log(tmp_path):
    demo = Demo(["buoyring", "moonball"], tmp_path)
    with pytest.raises(SystemExit, match="bad failed; its output is in .*bad.log"):
        demo.side_by_side({"bad": ["fit", "--no-such-option"], "good": ["fit", "--help"]})
    assert "no-such-option" in (tmp_path / "logs" / "bad.log").read_text()
