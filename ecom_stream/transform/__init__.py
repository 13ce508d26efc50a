"""Pure transforms: bytes -> records -> typed view -> silver rows, gold, bookkeeping rows."""
