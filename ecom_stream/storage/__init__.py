"""The lake: layout, Delta tables, raw and quarantine files, markers, the writer lock."""
