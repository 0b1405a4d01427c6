"""Names of JSON value types, for messages that say what a field got instead."""


def type_name(value: object) -> str:
    """``"a string"``, ``"an array"``, ``"null"``...: the JSON type of a decoded value."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__
