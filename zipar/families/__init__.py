"""Model families: what they build on (``base.Family``: the core's ``core.contract.Family`` plus
weight narrowing), the registry that finds every family module in this package, and one module
per family. Adding a family is adding a module (docs/engine.md)."""
