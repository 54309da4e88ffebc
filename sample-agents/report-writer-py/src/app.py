"""Report writer, in Python: on a weekly ``schedule`` event, lists the
week's issues of a repository through the ``github`` tool, has a capable
model (binding ``writer``) write the report, and files it as a Notion page
under the operator's reports page through the ``notion`` tool.

The same agent as sample-agents/report-writer (Rust), request for request:
it replays that agent's cassette."""

from __future__ import annotations

import json
from typing import Any, Dict, List, TypedDict

import clawcage

# Notion takes at most 2 000 characters in one rich-text run.
MAX_PARAGRAPH_CHARS = 2_000
# Notion takes at most 100 blocks in one request.
MAX_BLOCKS = 100

SYSTEM = ("You write the weekly engineering report for a team. Be concrete and brief: "
          "what was opened, what was closed, and what needs attention. Plain paragraphs.")


class Schedule(TypedDict):
    repo: str          # owner/repo
    since: str         # ISO 8601 start of the week
    notion_parent: str # the Notion page the report goes under


def brief(issue: Dict[str, Any]) -> Dict[str, Any]:
    """The part of an issue the model needs."""
    return {
        "number": issue.get("number"),
        "title": issue.get("title"),
        "state": issue.get("state"),
        "labels": [label["name"] for label in issue.get("labels") or [] if isinstance(label.get("name"), str)],
        "is_pull_request": "pull_request" in issue,
    }


def paragraphs(text: str) -> List[Dict[str, Any]]:
    """Splits the report into Notion paragraph blocks."""
    chunks = [p[i:i + MAX_PARAGRAPH_CHARS]
              for p in (part.strip() for part in text.split("\n\n")) if p
              for i in range(0, len(p), MAX_PARAGRAPH_CHARS)]
    return [{"object": "block", "type": "paragraph",
             "paragraph": {"rich_text": [{"type": "text", "text": {"content": chunk}}]}}
            for chunk in chunks[:MAX_BLOCKS]]


def handle(event: clawcage.Event) -> Dict[str, Any]:
    if event.source != "schedule" or event.kind != "weekly-report":
        return {"status": "ignored", "reason": f"{event.source}/{event.kind} is not schedule/weekly-report"}
    schedule: Schedule = event.payload

    github = clawcage.Tool.open("github")
    listed = github.call("issues.list", {"repo": schedule["repo"], "state": "all",
                                         "since": schedule["since"], "max_items": 200})
    issues = [brief(issue) for issue in listed or []]
    clawcage.log.info(f"{len(issues)} issues since {schedule['since']}")

    model = clawcage.Model.open("writer")
    # Pretty JSON with sorted keys: what the Rust agent sends, byte for byte.
    listing = json.dumps(issues, indent=2, sort_keys=True, ensure_ascii=False)
    answer = model.complete(
        system=SYSTEM,
        messages=[clawcage.user(f"Repository {schedule['repo']}, issues updated since {schedule['since']}:\n{listing}")],
        max_tokens=1_500,
        temperature=0.2,
    )

    blocks = paragraphs(answer.text)
    title = f"Weekly report: {schedule['repo']} since {schedule['since']}"
    page = clawcage.Tool.open("notion").call("pages.create", {
        "parent": {"page_id": schedule["notion_parent"]},
        "properties": {"title": {"title": [{"text": {"content": title}}]}},
        "children": blocks,
    })
    return {"status": "filed", "repo": schedule["repo"], "issues": len(issues),
            "page_id": page.get("id") or "", "paragraphs": len(blocks)}


Handler = clawcage.handler(handle)
