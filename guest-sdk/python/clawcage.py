"""ClawCage agents in Python: thin, typed wrappers over the
``clawcage:agent@0.2.0`` world (wit/agent.wit), for componentize-py.

``clawcage new --lang python`` copies this module into the project::

    import clawcage

    def handle(event: clawcage.Event) -> str:
        answer = clawcage.Model.open("default").complete(
            messages=[clawcage.user(event.payload["prompt"])], max_tokens=256)
        return answer.text

    Handler = clawcage.handler(handle)

- ``handler(fn)`` makes the class componentize-py exports: ``fn(event)``
  gets the event with its payload parsed, returns a string (or anything,
  sent as JSON), and may raise: every error reaches the host as the
  agent's error text, never as a crash.
- ``Model.open(binding).complete(...)`` and ``Tool.open(name).call(action,
  input)``: capabilities the operator granted; a refusal raises
  ``CapabilityError`` whose ``kind`` is the WIT error case.
- Import every module at the top of your files: at run time there is no
  file system to import from.
"""

from __future__ import annotations

import json
import weakref
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

from componentize_py_types import Err
from wit_world import exports
from wit_world.imports import inference, log as _log, tools

__all__ = [
    "CapabilityError", "Completion", "Event", "Model", "Tool", "ToolCall",
    "assistant", "handler", "json_text", "log", "tool_results", "tool_spec", "user",
]


class CapabilityError(Exception):
    """A capability refused: ``kind`` is the WIT error case (``not-granted``,
    ``rate-limited``, ...), ``detail`` its value."""

    def __init__(self, where: str, error: Any) -> None:
        name = type(error).__name__.split("_", 1)[-1]
        self.kind = "".join("-" + c.lower() if c.isupper() else c for c in name).lstrip("-")
        self.detail = getattr(error, "value", None)
        super().__init__(f"{where}: {self.kind}" + ("" if self.detail is None else f": {self.detail}"))


def _call(where: str, f: Callable[[], Any]) -> Any:
    try:
        return f()
    except Err as e:
        raise CapabilityError(where, e.value) from None


class _Log:
    """Log lines, by level."""

    def trace(self, message: object) -> None: _log.log(_log.Level.TRACE, str(message))
    def debug(self, message: object) -> None: _log.log(_log.Level.DEBUG, str(message))
    def info(self, message: object) -> None: _log.log(_log.Level.INFO, str(message))
    def warn(self, message: object) -> None: _log.log(_log.Level.WARN, str(message))
    def error(self, message: object) -> None: _log.log(_log.Level.ERROR, str(message))


log = _Log()


@dataclass
class Event:
    """An event: ``payload`` parsed from JSON (``raw_payload`` is the text)."""

    id: str
    source: str
    kind: str
    payload: Any
    raw_payload: str


def user(text: str) -> inference.Message:
    """A user message of text."""
    return inference.Message(role=inference.Role.USER, content=[inference.ContentPart_Text(str(text))], cache=None)


def assistant(text: str) -> inference.Message:
    """An assistant message of text."""
    return inference.Message(role=inference.Role.ASSISTANT, content=[inference.ContentPart_Text(str(text))], cache=None)


def tool_results(results: List[inference.ToolResult]) -> inference.Message:
    """A user message carrying tool results."""
    return inference.Message(
        role=inference.Role.USER, content=[inference.ContentPart_ToolResult(r) for r in results], cache=None)


def json_text(value: Any) -> str:
    """JSON text with object keys sorted and no spaces: the bytes the Rust SDK
    (serde_json) writes for the same value, so one agent written in any of
    the languages sends the same requests and replays the same cassettes."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def tool_spec(name: str, description: str, input_schema: Dict[str, Any]) -> inference.ToolSpec:
    """A tool the model may call, its input described by a JSON schema."""
    return inference.ToolSpec(name=name, description=description, input_schema=json_text(input_schema), cache=None)


@dataclass
class ToolCall:
    """A tool the model asks for, its input parsed."""

    id: str
    name: str
    input: Any


class Completion:
    """A completion, with helpers."""

    def __init__(self, raw: inference.Completion) -> None:
        self.raw = raw
        self.model = raw.model
        self.provider = raw.provider
        self.stop_reason = raw.stop_reason
        self.content = raw.content
        self.usage = raw.usage

    @property
    def text(self) -> str:
        """Every text part, joined."""
        return "".join(p.value for p in self.content if isinstance(p, inference.ContentPart_Text))

    @property
    def tool_calls(self) -> List[ToolCall]:
        """The tool calls the model asks for."""
        return [ToolCall(p.value.id, p.value.name, json.loads(p.value.input))
                for p in self.content if isinstance(p, inference.ContentPart_ToolUse)]

    @property
    def wants_tools(self) -> bool:
        """Whether the model stopped to have tools run."""
        return self.stop_reason == inference.StopReason.TOOL_USE

    def to_message(self) -> inference.Message:
        """The assistant message that continues the conversation."""
        return inference.Message(role=inference.Role.ASSISTANT, content=self.content, cache=None)


class Model:
    """A model binding the operator granted."""

    def __init__(self, inner: inference.Model) -> None:
        self.inner = inner

    @staticmethod
    def open(name: str) -> "Model":
        """Opens binding ``name`` (``default``, ...)."""
        return Model(_call(f"model {name}", lambda: inference.Model.open(name)))

    def describe(self) -> inference.ModelInfo:
        """The binding's provider and model."""
        return self.inner.describe()

    def complete(self, messages: List[inference.Message], system: Optional[str] = None, max_tokens: int = 1024,
                 temperature: Optional[float] = None, stop: Optional[List[str]] = None,
                 tools: Optional[List[inference.ToolSpec]] = None) -> Completion:
        """Runs a request to completion."""
        request = inference.CompletionRequest(
            system=system, system_cache=None, messages=messages, max_tokens=max_tokens, temperature=temperature,
            stop_sequences=stop or [], tools=tools or [], tool_choice=None)
        return Completion(_call("complete", lambda: self.inner.complete(request)))


class Tool:
    """A tool the operator granted."""

    def __init__(self, inner: tools.Tool) -> None:
        self.inner = inner

    @staticmethod
    def open(name: str) -> "Tool":
        """Opens tool ``name`` (``github``, ...)."""
        return Tool(_call(f"tool {name}", lambda: tools.Tool.open(name)))

    def call(self, action: str, input: Any = None) -> Any:
        """Calls ``action`` with ``input`` (sent as JSON); answers the parsed result."""
        return json.loads(_call(action, lambda: self.inner.call(action, json_text(input or {}))))


def handler(handle: Callable[[Event], Any]) -> type:
    """The class componentize-py exports: ``Handler = clawcage.handler(fn)``."""

    class Handler(exports.Handler):
        def handle(self, event: Any) -> str:
            try:
                payload = json.loads(event.payload)
            except ValueError:
                payload = event.payload
            try:
                result = handle(Event(event.id, event.source, event.kind, payload, event.payload))
            except Err:
                raise
            except Exception as e:  # the host takes only text as the error
                raise Err(str(e) or type(e).__name__) from None
            return result if isinstance(result, str) else json.dumps(result)

    return Handler


def _warm() -> None:
    """Runs, at build time, the paths every event takes the first time.

    componentize-py snapshots the interpreter after importing the app, and
    every event starts from that snapshot in a fresh instance. What is
    lazily set up on first use (the JSON codec's scanner and encoder, the
    ``weakref.finalize`` registry that every WIT resource handle joins, the
    records of a request) is otherwise set up again in every event: about
    0.4 ms of a Python agent's event. No import is called: there is no host
    at build time.
    """

    class _Resource:
        pass

    weakref.finalize(_Resource(), lambda: None).detach()
    for text in ('{"prompt": "x", "n": [1, 2.5, true, null], "o": {}}', "[]", '"x"'):
        value = json.loads(text)
        json.dumps(value)
        json_text(value)
    request = inference.CompletionRequest(
        system=None, system_cache=None, messages=[user("x"), assistant("y"), tool_results([])],
        max_tokens=1, temperature=None, stop_sequences=[], tools=[tool_spec("t", "d", {"type": "object"})],
        tool_choice=None)
    del request


_warm()
