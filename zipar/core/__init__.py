"""The decoding core: the ZipAR schedule, the plan built from it, the decode loop, sampling and
the slot cache. It knows no model family: the contract a family implements lives here
(``contract.py``), so nothing in the core imports ``zipar.families``, ``io``, ``vq`` or ``nets``;
families build on it through ``zipar.families.base``."""
