"""A new ClawCage agent: asks its model once and answers with the text."""

import clawcage
import logic


def handle(event: clawcage.Event) -> str:
    clawcage.log.info(f"asking the model for a {event.kind} event")
    request = logic.request_for(event.payload.get("prompt", ""))
    answer = clawcage.Model.open("default").complete(
        messages=[clawcage.user(request["prompt"])], system=request["system"], max_tokens=request["max_tokens"])
    return answer.text


# The class componentize-py exports. Import every module at the top: at run
# time there is no file system to import from.
Handler = clawcage.handler(handle)
