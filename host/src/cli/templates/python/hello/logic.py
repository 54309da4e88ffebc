"""The agent's logic that needs no host: tested with unittest."""


def request_for(prompt: str) -> dict:
    """The request the agent sends: its prompt, capped in length."""
    return {"system": "You are a concise assistant.", "prompt": str(prompt)[:4000], "max_tokens": 256}
