"""Bad command lines stop with one line naming the culprit, before anything is written."""

from conftest import assert_refused
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
  assert_refused(proc, run_dir, *expected)
  assert "Training" not in proc.stdout


UNUSED = [
  (["--csv_path=data.csv"], "--csv_path belongs to dataset csv, but this run uses --dataset=synthetic."),
  (["--momentum=0.9"], "--momentum applies only with --optimizer=sgd"),
  (["--lr_decay_steps=10"], "--lr_decay_steps applies only with --lr_schedule=step"),
]


@pytest.mark.parametrize("args,expected", UNUSED, ids=[a[0] for a, _ in UNUSED])
def test_flag_of_an_unused_component_is_an_error(args, expected, tmp_path, train_cli):
  run_dir = tmp_path / "run"
  assert_refused(train_cli(f"--run_dir={run_dir}", "--train_steps=5", *args), run_dir, expected)


def test_another_balancers_flag_only_warns(tmp_path, train_cli):
  proc = train_cli(f"--run_dir={tmp_path / 'run'}", "--train_steps=5", "--num_train=64", "--gradnorm_alpha=0.5")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert "warning: --gradnorm_alpha is ignored: it belongs to gradnorm, not --balancer=fixed." in proc.stderr


def test_flagfile_of_a_run_sets_every_flag_without_tripping_the_check(tmp_path, train_cli):
  run_dir = tmp_path / "run"
  assert train_cli(f"--run_dir={run_dir}", "--train_steps=5", "--num_train=64").returncode == 0
  again = train_cli(f"--flagfile={run_dir}/flags.txt")  # every flag, most at their defaults
  ours = [line for line in again.stderr.splitlines() if line.startswith(("error: ", "warning: "))]
  assert again.returncode == 0 and not ours, again.stderr[-2000:]
