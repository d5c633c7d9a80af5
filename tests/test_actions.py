"""The controller's periodic actions: when each is due, and where loop calls end."""

import pytest

from mtl_research.train import actions


def _noop(end):
  del end


SUMMARIES = actions.PeriodicAction("summaries", 10, _noop, needs_diagnostics=True)
VALIDATION = actions.PeriodicAction("validation", 20, _noop)
NEVER_PERIODIC = actions.PeriodicAction("final only", 0, _noop)


@pytest.mark.parametrize(
  "step, expected",
  [
    (0, 7),  # steps_per_loop
    (7, 10),  # summaries
    (17, 20),
    (35, 40),  # the end of training
    (39, 40),
  ],
)
def test_a_loop_call_ends_at_the_first_due_action(step, expected):
  assert actions.next_stop(step, 40, 7, [SUMMARIES, VALIDATION, NEVER_PERIODIC]) == expected


@pytest.mark.parametrize(
  "action, step, due",
  [
    (SUMMARIES, 10, True),
    (SUMMARIES, 15, False),
    (SUMMARIES, 43, True),  # 43: the end
    (VALIDATION, 10, False),
    (VALIDATION, 40, True),
    (NEVER_PERIODIC, 40, False),
    (NEVER_PERIODIC, 43, True),
    (actions.PeriodicAction("no end", 10, _noop, at_end=False), 43, False),
  ],
)
def test_due_every_n_steps_and_at_the_end(action, step, due):
  assert action.due(step, 43) is due


def test_diagnostics_are_asked_for_only_where_an_action_needing_them_is_due():
  assert actions.needs_diagnostics([SUMMARIES, VALIDATION], 10, 43)
  assert not actions.needs_diagnostics([SUMMARIES, VALIDATION], 15, 43)
  assert not actions.needs_diagnostics([VALIDATION], 20, 43)
