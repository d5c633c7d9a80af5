"""Parsing of component Params: values, bounds and the messages of bad input."""

import math

import numpy as np
import pytest

from mtl_research.errors import UserError
from mtl_research.params import (
  BOOL,
  ENUM,
  FLOAT,
  FLOAT32_MAX,
  FLOATS,
  INT,
  INTS,
  TASK_FLOATS,
  Param,
  check_task_names,
  finite,
  is_finite,
  parse_task_floats,
)

UNITS = Param("hidden_units", INTS, "128,64", "Widths.", lower=1)
RATES = Param("rates", FLOATS, "0.5", "Rates.", lower=0.0)
WEIGHTS = Param("task_weights", TASK_FLOATS, "", "Weights.", lower=0.0)


class TestInts:
  def test_parses_ints_with_spaces(self):
    value = UNITS.parse(" 128, 64 ,8")
    assert value == (128, 64, 8)
    assert all(type(v) is int for v in value)  # pylint: disable=unidiomatic-typecheck

  @pytest.mark.parametrize("raw", ["", "  "])
  def test_empty_list_is_refused(self, raw):
    with pytest.raises(UserError, match="--hidden_units is empty"):
      UNITS.parse(raw)

  @pytest.mark.parametrize(
    "raw,message",
    [
      ("128,,64", "empty item"),
      ("128,", "empty item"),
      (",64", "empty item"),
      ("128,abc", "'abc' is not an integer"),
      ("1.5", "'1.5' is not an integer"),
      ("128,0", "below its minimum 1"),
      ("-4", "below its minimum 1"),
    ],
  )
  def test_errors_name_the_flag(self, raw, message):
    with pytest.raises(UserError, match=message) as info:
      UNITS.parse(raw)
    assert "--hidden_units" in str(info.value)


class TestFloats:
  def test_parses_floats(self):
    assert RATES.parse("0.5, 2,1e-3") == (0.5, 2.0, 0.001)

  @pytest.mark.parametrize(
    "raw,message",
    [
      ("0.5,,1", "empty item"),
      ("0.5,x", "'x' is not a number"),
      ("-0.5", "below its minimum 0.0"),
      ("nan", "value nan is not a finite number"),  # NaN would pass every bound: no comparison with it is true
      ("0.5,inf", "value inf is not a finite number"),
      ("-inf", "value -inf is not a finite number"),
      ("1e999", "value inf is not a finite number"),  # float() overflows to inf
      ("0.5,1e39", "value 1e\\+39 is beyond float32's range"),  # inf where training computes
    ],
  )
  def test_errors_name_the_flag(self, raw, message):
    with pytest.raises(UserError, match=message) as info:
      RATES.parse(raw)
    assert "--rates" in str(info.value)

  def test_no_lower_bound_allows_negative(self):
    assert Param("shift", FLOATS, "", "Shifts.").parse("-1,2") == (-1.0, 2.0)


class TestTaskFloats:
  def test_parses_name_value_pairs(self):
    assert WEIGHTS.parse("price:0.25, kind : 3") == {"price": 0.25, "kind": 3.0}

  def test_empty_is_empty_dict(self):
    assert WEIGHTS.parse("") == {}
    assert WEIGHTS.parse(" ") == {}

  def test_zero_is_allowed(self):
    assert WEIGHTS.parse("price:0") == {"price": 0.0}

  @pytest.mark.parametrize(
    "raw,message",
    [
      ("price", "item 'price' is not of the form task_name:number"),
      ("price:", "not of the form task_name:number"),
      (":1", "not of the form task_name:number"),
      ("price:1,", "item '' is not of the form"),
      ("price:1,,kind:2", "item '' is not of the form"),
      ("price:abc", "value 'abc' for task 'price' is not a number"),
      ("price:-1", "value -1.0 for task 'price' is negative"),
      ("price:1,price:2", "names task 'price' twice"),
      ("price:inf", "must be finite"),
      ("price:nan", "must be finite"),
      ("price:1e39", "must be finite"),
    ],
  )
  def test_errors_name_the_flag(self, raw, message):
    with pytest.raises(UserError, match=message) as info:
      WEIGHTS.parse(raw)
    assert "--task_weights" in str(info.value)

  def test_no_lower_bound_allows_negative(self):
    assert parse_task_floats("offsets", "a:-1.5,b:2", lower=None) == {"a": -1.5, "b": 2.0}

  def test_custom_lower_bound(self):
    with pytest.raises(UserError, match="--scale"):
      parse_task_floats("scale", "a:0.5", lower=1.0)
    assert parse_task_floats("scale", "a:1", lower=1.0) == {"a": 1.0}


class TestScalars:
  def test_float_bound_is_inclusive(self):
    dropout = Param("dropout", FLOAT, 0.0, "Rate.", lower=0.0)
    assert dropout.parse(0.0) == 0.0
    assert dropout.parse(0.3) == pytest.approx(0.3)
    with pytest.raises(UserError, match="--dropout value -0.1 is below its minimum 0.0"):
      dropout.parse(-0.1)
    with pytest.raises(UserError, match="--dropout"):
      dropout.parse(math.nan)

  def test_int_bound(self):
    rows = Param("num_train", INT, 8000, "Rows.", lower=1)
    assert rows.parse(1) == 1
    with pytest.raises(UserError, match="--num_train"):
      rows.parse(0)

  def test_bool_and_enum_pass_through(self):
    assert Param("flag", BOOL, False, "A bool.").parse(True) is True
    assert Param("mode", ENUM, "a", "An enum.", choices=("a", "b")).parse("b") == "b"


class TestFinite:
  """No number of a Param may be NaN or infinite, bounded or not (params.finite)."""

  @pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
  @pytest.mark.parametrize(
    "param",
    [
      Param("init_log_var", FLOAT, 0.0, "No bounds at all."),
      Param("scale", FLOAT, 1.0, "A lower bound.", lower=0.0),
      Param("rate", FLOAT, 0.0, "Both bounds.", lower=0.0, below=1.0),
    ],
    ids=lambda param: param.name,
  )
  def test_float_param_refuses_non_finite_values_naming_the_flag(self, param, value):
    with pytest.raises(UserError, match=rf"^--{param.name} value {value} is not a finite number\.$"):
      param.parse(value)

  def test_unbounded_float_list_refuses_non_finite_items(self):
    shifts = Param("shifts", FLOATS, "0", "Shifts.")
    assert shifts.parse("-1e38,1e38") == (-1e38, 1e38)
    with pytest.raises(UserError, match="--shifts value -inf is not a finite number"):
      shifts.parse("1,-inf")

  @pytest.mark.parametrize("value", [FLOAT32_MAX * 1.0001, -1e39, 1e300])
  def test_numbers_beyond_float32_are_refused(self, value):
    with np.errstate(over="ignore"):
      assert math.isinf(np.float32(value))  # what training would compute with
    assert not is_finite(value)
    with pytest.raises(UserError, match="^--init_log_var value .* is beyond float32's range"):
      Param("init_log_var", FLOAT, 0.0, "No bounds at all.").parse(value)

  def test_finite_values_pass_unchanged(self):
    assert finite("x", 0.25) == 0.25
    assert finite("x", FLOAT32_MAX) == FLOAT32_MAX == float(np.finfo(np.float32).max)
    assert finite("x", -FLOAT32_MAX) == -FLOAT32_MAX
    assert finite("x", 2**70) == 2**70  # integers are always finite (and too large for a float here)
    assert finite("x", "text") == "text"


class TestCheckTaskNames:
  def test_known_names_pass(self):
    check_task_names("task_weights", {"price": 1.0}, ["price", "kind"])
    check_task_names("task_weights", {}, ["price", "kind"])

  def test_unknown_name_is_named_with_the_tasks(self):
    with pytest.raises(UserError) as info:
      check_task_names("task_weights", {"price": 1.0, "nope": 2.0}, ["price", "kind"])
    message = str(info.value)
    assert "--task_weights" in message
    assert "'nope'" in message
    assert "price, kind" in message
