"""The agent's logic that needs no host: tested with unittest."""

import json


def run_tool(name: str, tool_input) -> str:
    """Runs one of this agent's own tools; a bad call is an answer, not a crash."""
    if name != "add":
        return json.dumps({"error": f"no tool {name}"})
    try:
        a, b = tool_input["a"], tool_input["b"]
        total = a + b
    except (KeyError, TypeError):
        return json.dumps({"error": "bad input: a and b are numbers"})
    return json.dumps({"sum": total})
