"""The README demo tunes its two concepts side by side (one CPU thread each): both run to the end with their output
in a log of their own and one line of timing, and a failing one stops the other and names its log."""

import pytest

from mos_lightning.world.demo import Demo


def test_commands_side_by_side_each_log_their_output_and_time_as_one_stage(tmp_path):
    demo = Demo(["buoyring", "moonball"], tmp_path)
    # python -m modules stand in for mos-lightning commands (a second each instead of a tuning's minute)
    demo.side_by_side({"one": ["-m", "json.tool", "--help"], "two": ["-m", "platform"]})
    assert "usage" in (tmp_path / "logs" / "one.log").read_text()
    assert (tmp_path / "logs" / "two.log").read_text().strip()  # the platform's name
    (line,) = demo.timing.read_text().splitlines()
    assert line.split("\t")[0] == "one+two"


def test_a_failing_command_stops_the_demo_and_names_its_log(tmp_path):
    demo = Demo(["buoyring", "moonball"], tmp_path)
    with pytest.raises(SystemExit, match="bad failed; its output is in .*bad.log"):
        demo.side_by_side({"bad": ["-m", "no_such_module_here"], "good": ["-m", "platform"]})
    assert "no_such_module_here" in (tmp_path / "logs" / "bad.log").read_text()
