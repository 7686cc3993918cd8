"""The method registry (its own module so method files and the package index can both import it)."""

from ssl_transfer.methods.base import PretextMethod
from ssl_transfer.registry import Registry

METHODS: Registry[type[PretextMethod]] = Registry("method")
