"""Bad command lines stop with one line naming the culprit, before anything is written."""

import pytest

# (extra arguments, substrings the error must contain)
CASES = [
    (["--balancer=nope"], ["--balancer=nope", "fixed"]),
    (["--dataset=nope"], ["--dataset=nope", "synthetic"]),
    (["--task_weights=price:-1"], ["task_weights", "negative"]),
    (["--task_weights=price:abc"], ["task_weights", "'abc'"]),
    (["--task_weights=nope:1"], ["task_weights", "'nope'", "price, kind"]),
    (["--task_weights=price"], ["task_weights", "task_name:number"]),
    (["--hidden_units=128,,64"], ["hidden_units", "empty item"]),
    (["--hidden_units="], ["--hidden_units is empty"]),
    (["--balancer=gradnorm", "--hidden_units="], ["--hidden_units is empty"]),
    (["--batch_size=-1"], ["batch_size"]),
    (["--learning_rate=0"], ["learning_rate", "positive"]),
    (["--num_train=16"], ["16 rows", "--batch_size=32"]),  # fewer rows than one batch
    (["positional"], ["unexpected argument", "'positional'"]),
]


@pytest.mark.parametrize("args,expected", CASES, ids=[" ".join(args) for args, _ in CASES])
def test_bad_command_line(args, expected, tmp_path, train_cli):
  run_dir = tmp_path / "run"
  proc = train_cli(f"--run_dir={run_dir}", "--train_steps=5", *args)
  assert proc.returncode != 0
  for text in expected:
    assert text in proc.stderr, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  assert not run_dir.exists()
  assert "Training" not in proc.stdout
