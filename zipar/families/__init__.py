"""Model families: the contract (``base.Family``), the registry that finds every family module in
this package, and one module per family. Adding a family is adding a module (docs/engine.md)."""
