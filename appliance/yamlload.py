"""YAML → typed pydantic models, with every mistake reported as ``file:line: key: problem``.

PyYAML's own constructors forget where a value came from and silently keep the last of two
duplicate keys; we compose the node tree ourselves so that both are caught.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError

from appliance.errors import ConfigError

M = TypeVar("M", bound=BaseModel)
Loc = tuple[str | int, ...]


def _scalar(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> Any:
    tag = loader.resolve(yaml.ScalarNode, node.value, (True, False))
    if node.tag != tag and node.tag.startswith("tag:yaml.org,2002:"):
        tag = node.tag
    return loader.construct_object(yaml.ScalarNode(tag, node.value, node.start_mark, node.end_mark))


def _build(
    loader: yaml.SafeLoader, node: yaml.Node, loc: Loc, lines: dict[Loc, int], file: str
) -> Any:
    lines[loc] = node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(
                    "YAML merge keys (<<) are not supported",
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            key = _build(loader, key_node, (*loc, "<key>"), {}, file)
            if not isinstance(key, str | int | float | bool) and key is not None:
                raise ConfigError(
                    "mapping keys must be plain scalars",
                    file=file,
                    line=key_node.start_mark.line + 1,
                )
            skey = str(key) if not isinstance(key, str) else key
            if skey in out:
                raise ConfigError(
                    f"duplicate key '{skey}' (first at line {lines[(*loc, skey)]})",
                    file=file,
                    line=key_node.start_mark.line + 1,
                    key=_dotted((*loc, skey)),
                    hint="a key may appear once in a mapping",
                )
            lines[(*loc, skey)] = key_node.start_mark.line + 1
            out[skey] = _build(loader, value_node, (*loc, skey), lines, file)
            lines[(*loc, skey)] = key_node.start_mark.line + 1
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_build(loader, item, (*loc, i), lines, file) for i, item in enumerate(node.value)]
    assert isinstance(node, yaml.ScalarNode)
    return _scalar(loader, node)


def _dotted(loc: Loc) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + part
    return out


class YamlDocument:
    """A parsed YAML file: its data plus the line of every key and item."""

    def __init__(self, data: Any, lines: dict[Loc, int], file: str) -> None:
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, loc: Loc) -> int | None:
        loc = tuple(loc)
        while loc:
            if loc in self.lines:
                return self.lines[loc]
            loc = loc[:-1]
        return self.lines.get((), None)

    def error(self, loc: Loc, message: str, hint: str | None = None) -> ConfigError:
        return ConfigError(
            message, file=self.file, line=self.line_of(loc), key=_dotted(loc) or None, hint=hint
        )

    def validate(self, model: type[M], data: Any | None = None) -> M:
        try:
            return model.model_validate(self.data if data is None else data)
        except ValidationError as err:
            raise self.from_validation(err) from None

    def from_validation(self, err: ValidationError, prefix: Loc = ()) -> ConfigError:
        first = err.errors()[0]
        loc: Loc = (*prefix, *(p for p in first["loc"] if not _is_union_tag(p)))
        kind = first["type"]
        hint = None
        message = first["msg"]
        if kind == "extra_forbidden":
            message = "unknown key"
            hint = _known_keys_hint(err, first)
        elif kind == "missing":
            message = "required key is missing"
        elif "input" in first and kind not in ("missing",):
            value = first["input"]
            if not isinstance(value, Mapping | list):
                message = f"value {value!r} is not valid: {first['msg']}"
        ce = self.error(loc, message, hint)
        return ce


def _is_union_tag(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or part.startswith("function-"))


def _known_keys_hint(err: ValidationError, first: Any) -> str | None:
    model = getattr(err, "title", None)
    return f"not a field of {model}" if model else None


def parse_yaml_text(text: str, file: str = "<string>") -> YamlDocument:
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
    except yaml.MarkedYAMLError as err:
        mark = err.problem_mark or err.context_mark
        raise ConfigError(
            f"not valid YAML: {err.problem or err.context}",
            file=file,
            line=(mark.line + 1) if mark else None,
        ) from None
    except yaml.YAMLError as err:
        raise ConfigError(f"not valid YAML: {err}", file=file) from None
    finally:
        loader.dispose()
    lines: dict[Loc, int] = {}
    if node is None:
        return YamlDocument({}, {(): 1}, file)
    data = _build(yaml.SafeLoader(""), node, (), lines, file)
    return YamlDocument(data, lines, file)


def load_yaml(path: str | Path) -> YamlDocument:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError("file not found", file=str(p)) from None
    except (OSError, UnicodeDecodeError) as err:
        raise ConfigError(f"cannot read: {err}", file=str(p)) from None
    return parse_yaml_text(text, str(p))


def load_model(path: str | Path, model: type[M]) -> M:
    doc = load_yaml(path)
    return doc.validate(model)
