"""The rules engine: load YAML rules, validate them, evaluate them safely over the facts."""
