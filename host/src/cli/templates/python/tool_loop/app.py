"""A new ClawCage agent with a tool loop: it offers the model a tool of its
own (`add`), runs every call the model asks for, sends the results back, and
stops when the model answers in text (or after a few rounds)."""

import clawcage
import logic
from wit_world.imports.inference import ToolResult

MAX_ROUNDS = 5
ADD = clawcage.tool_spec("add", "Adds two numbers.", {
    "type": "object",
    "properties": {"a": {"type": "number"}, "b": {"type": "number"}},
    "required": ["a", "b"],
})


def handle(event: clawcage.Event) -> str:
    model = clawcage.Model.open("default")
    messages = [clawcage.user(event.payload.get("prompt", ""))]
    for round in range(MAX_ROUNDS):
        answer = model.complete(messages=messages, max_tokens=512, tools=[ADD])
        if not answer.wants_tools:
            return answer.text
        messages.append(answer.to_message())
        results = []
        for call in answer.tool_calls:
            clawcage.log.info(f"round {round}: the model calls {call.name}")
            results.append(ToolResult(tool_use_id=call.id, content=logic.run_tool(call.name, call.input), is_error=False))
        messages.append(clawcage.tool_results(results))
    raise RuntimeError(f"no answer after {MAX_ROUNDS} rounds")


Handler = clawcage.handler(handle)
