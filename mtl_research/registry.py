"""Name → component lookup shared by datasets, architectures and balancers.

Each component registers itself with a decorator in its own module, declaring
the `Param`s it reads; `mtl_research.flags` turns those into flags. Adding a
component is one new module plus one import line in its family's `__init__.py`
(`data/`, `models/`, `balancers/`).
"""

from __future__ import annotations

from collections.abc import Callable
import dataclasses
from typing import Any, Generic, TypeVar

from mtl_research.params import Param

T = TypeVar("T")


@dataclasses.dataclass(frozen=True)
class Entry(Generic[T]):
  name: str
  component: T
  params: tuple[Param, ...]
  description: str  # first line of the component's docstring, shown in --help


class Registry(Generic[T]):
  """A named family of components (for example "dataset" or "balancer")."""

  def __init__(self, family: str):
    self.family = family
    self._entries: dict[str, Entry[T]] = {}

  def register(self, name: str, params: tuple[Param, ...] = ()) -> Callable[[T], T]:
    def decorate(component: T) -> T:
      if name in self._entries:
        raise ValueError(f"{self.family} {name!r} is registered twice.")
      doc = (getattr(component, "__doc__", None) or "").strip().splitlines()
      self._entries[name] = Entry(name, component, tuple(params), doc[0] if doc else "")
      return component

    return decorate

  def get(self, name: str) -> Entry[T]:
    return self._entries[name]

  def names(self) -> list[str]:
    return sorted(self._entries)

  def entries(self) -> list[Entry[Any]]:
    return [self._entries[name] for name in self.names()]
