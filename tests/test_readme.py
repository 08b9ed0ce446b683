"""The README's code runs as written."""

import os
import re

import tiny

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def python_blocks():
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        return re.findall(r"```python\n(.*?)```", f.read(), re.DOTALL)


def test_the_engine_snippet_trains_on_raw_strings(tmp_path):
    [block] = [b for b in python_blocks() if "painless_tf.Trainer" in b]
    # The README's own code, with a tiny preset for `preset`.
    scope = {"preset": tiny.write_preset(tmp_path / "preset")}
    exec(compile(block, "README.md", "exec"), scope)  # noqa: S102
    trainer = scope["trainer"]
    assert int(trainer.optimizer.iterations.numpy()) == 12  # 4 batches x 3
    assert trainer.history.history["loss"][-1] > 0
