"""The decoding core: the ZipAR schedule, the plan built from it, the decode loop, sampling and
the slot cache. It knows no model family; families plug in through ``zipar.families.base``."""
