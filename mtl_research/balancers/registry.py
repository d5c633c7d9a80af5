"""The balancer registry; entries are `Balancer` subclasses."""

from mtl_research.registry import Registry

BALANCERS: Registry = Registry("balancer")
