"""The micro-batch: intake, validation, merges, the commit protocol, gold refresh."""
