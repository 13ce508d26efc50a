"""The data contract: entities, fields, keys, the Arrow schema of each table."""
